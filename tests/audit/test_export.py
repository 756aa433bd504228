"""export_log: verified JSON lines, filters, refusal and forced, marked export."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from fedcare.audit import AuditLog, export_log
from fedcare.errors import AuditError, ConfigError

from .conftest import fill


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def written(open_log: AuditLog, log_path: Path) -> Path:
    fill(open_log, 10)
    return log_path


def test_exports_every_entry_verified(written: Path, kit: Path, tmp_path: Path) -> None:
    out = tmp_path / "export" / "audit.jsonl"
    result = export_log(written, out, cert_path=kit / "cert.pem")
    assert result.written == 10 and result.verification.ok
    rows = _read(out)
    originals = [json.loads(line) for line in written.read_bytes().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 11))
    assert all(r.pop("verified") is True and r.pop("line") for r in rows)
    assert rows == originals
    assert rows[0]["data"]["note"] == "Zürich ✓"


def test_filters_by_event_and_time(written: Path, kit: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    kept = export_log(written, out, cert_path=kit / "cert.pem", events=["decision", "approval"])
    rows = _read(out)
    assert kept.written == 4 and {r["event"] for r in rows} == {"decision", "approval"}
    times = [json.loads(line)["time"] for line in written.read_bytes().splitlines()]
    export_log(written, out, since=times[3], until=times[6])
    assert [r["seq"] for r in _read(out)] == [4, 5, 6]
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    assert export_log(written, out, since=future).written == 0


def test_refuses_a_log_that_fails_verification(written: Path, kit: Path, tmp_path: Path) -> None:
    lines = written.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"rows":103', b'"rows":3')
    written.write_bytes(b"".join(lines))
    out = tmp_path / "out.jsonl"
    with pytest.raises(AuditError, match="entry 4: hash does not match its content; not exported"):
        export_log(written, out, cert_path=kit / "cert.pem")
    assert not out.exists()


def test_forced_export_marks_what_is_not_verified(written: Path, tmp_path: Path) -> None:
    lines = written.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"rows":103', b'"rows":3')
    lines[6] = b"garbage\n"
    written.write_bytes(b"".join(lines))
    out = tmp_path / "out.jsonl"
    result = export_log(written, out, force=True)
    rows = _read(out)
    assert result.written == 10 and not result.verification.ok
    assert [r["verified"] for r in rows] == [True] * 3 + [False] * 7
    assert rows[3]["problem"] == "entry 4: hash does not match its content"
    assert rows[3]["data"]["rows"] == 3
    assert rows[6] == {"line": 7, "raw": "garbage", "verified": False}


def test_bad_arguments(written: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is the log itself"):
        export_log(written, written)
    with pytest.raises(ConfigError, match="since='yesterday' is not an ISO-8601 time"):
        export_log(written, tmp_path / "o.jsonl", since="yesterday")
    with pytest.raises(ConfigError, match="has no time zone"):
        export_log(written, tmp_path / "o.jsonl", until=dt.datetime(2026, 1, 1))
