"""Export an audit log as JSON lines, after verifying it.

Each output line is the entry's JSON object plus ``"line"`` (its number in the log) and
``"verified"`` (true when that entry and every one before it verified). A log that fails
verification is exported only with ``force=True``; then entries from the first bad one on carry
``"verified": false``, the first bad one also ``"problem"``, and lines that are not entries at
all come out as ``{"line", "raw", "verified": false}`` so the evidence is kept.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.audit._format import CertPaths, PublicKeys, parse_time
from fedcare.audit.verify import VerifyResult, entry_records, verify_log
from fedcare.errors import AuditError, ConfigError

__all__ = ["ExportResult", "export_log"]


@dataclass(frozen=True)
class ExportResult:
    """How many lines were written, and the verification they were written under."""

    written: int
    verification: VerifyResult


def _as_time(value: str | dt.datetime | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ConfigError(f"export {name}={value!r} has no time zone; give a UTC time")
        return value
    try:
        return parse_time(value) if value.endswith("Z") else dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"export {name}={value!r} is not an ISO-8601 time") from None


def _keep(
    record: Any,
    events: Collection[str] | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> bool:
    if events is not None and record["event"] not in events:
        return False
    when = parse_time(record["time"])
    return (since is None or when >= since) and (until is None or when < until)


def _lines(
    log: bytes,
    result: VerifyResult,
    events: Collection[str] | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> list[bytes]:
    out = []
    for number, record, raw in entry_records(log):
        verified = result.ok or (result.first_bad is not None and number < result.first_bad)
        if record is None:
            doc: dict[str, Any] = {
                "line": number,
                "raw": raw.decode("utf-8", "replace"),
                "verified": False,
            }
        elif _keep(record, events, since, until):
            doc = {**record, "line": number, "verified": verified}
            if number == result.first_bad:
                doc["problem"] = result.reason
        else:
            continue
        out.append(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
    return out


def export_log(
    path: Path,
    out_path: Path,
    *,
    cert_path: CertPaths | None = None,
    public_key: PublicKeys | None = None,
    events: Collection[str] | None = None,
    since: str | dt.datetime | None = None,
    until: str | dt.datetime | None = None,
    force: bool = False,
) -> ExportResult:
    """Verify the log at ``path`` and write its entries to ``out_path`` as JSON lines.

    Parameters
    ----------
    path, out_path:
        The log and the export file (written atomically; must differ from the log).
    cert_path, public_key:
        The signer's certificate or key, for verification (see :func:`verify_log`).
    events:
        Keep only entries with these event names.
    since, until:
        Keep only entries with ``since <= time < until`` (ISO-8601 strings or aware datetimes).
    force:
        Export a log that fails verification, marking what is not verified.

    Raises
    ------
    AuditError
        If the log fails verification and ``force`` is False (names the first bad entry).
    ConfigError
        If an argument is invalid or the log does not exist.
    """
    path, out_path = Path(path), Path(out_path)
    if out_path.resolve() == path.resolve():
        raise ConfigError(f"export out_path {out_path} is the log itself")
    start, end = _as_time(since, "since"), _as_time(until, "until")
    result = verify_log(path, cert_path=cert_path, public_key=public_key)
    if not result.ok and not force:
        raise AuditError(f"audit log {path} fails verification: {result.reason}; not exported")
    log = path.read_bytes() if path.exists() else b""
    lines = _lines(log, result, None if events is None else set(events), start, end)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ExportResult(len(lines), result)
