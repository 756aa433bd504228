"""Reading the coordinator's audit trail for people: a page of entries, newest first, its
signed head, and the verification ``fedcare audit verify HOME/audit.jsonl --kit KIT`` does
(with the kit the coordinator recorded in its home), for the HTTP API and the web pages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.audit.check import LogCheck, check_log
from fedcare.audit.head import head_path, read_head
from fedcare.coordinator.files import recorded_kit

__all__ = [
    "AuditPage",
    "audit_head",
    "audit_page",
    "coordinator_certs",
    "verify_coordinator_audit",
]


@dataclass(frozen=True)
class AuditPage:
    """``entries`` (newest first) from ``offset`` (0: the newest) of ``total`` lines."""

    entries: list[dict[str, Any]]
    total: int


def audit_page(path: Path, offset: int = 0, limit: int = 50) -> AuditPage:
    """A page of the log at ``path``, newest first. Each entry is its JSON object plus
    ``"line"`` (its line number); a line that is not an entry comes as ``{"line", "raw",
    "problem"}``. A missing log is an empty page."""
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return AuditPage([], 0)
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    chosen = list(reversed(numbered))[max(offset, 0) : max(offset, 0) + max(limit, 0)]
    entries = []
    for number, line in chosen:
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            entries.append({**record, "line": number})
        except ValueError:
            text = line.decode("utf-8", "replace")[:500]
            entries.append({"line": number, "raw": text, "problem": "not a valid entry"})
    return AuditPage(entries, len(numbered))


def audit_head(path: Path) -> dict[str, Any] | None:
    """The signed head checkpoint beside the log (``{"seq", "hash"}``), None without one;
    ``{"problem": …}`` when it cannot be read."""
    try:
        head = read_head(head_path(path))
    except ValueError as err:
        return {"seq": None, "hash": None, "problem": str(err)}
    return None if head is None else {"seq": head[0], "hash": head[1]}


def verify_coordinator_audit(path: Path, home: Path | None) -> LogCheck:
    """Verify the coordinator's log as ``fedcare audit verify`` does, against every
    certificate of the kit recorded in ``home`` (signatures unchecked when none is known).

    Raises
    ------
    ConfigError
        If the log, a certificate or an anchor file cannot be read.
    """
    return check_log(path, cert_path=coordinator_certs(home))


def coordinator_certs(home: Path | None) -> list[Path] | None:
    """Every certificate of the coordinator kit recorded in ``home`` (oldest first), None
    when no kit is recorded or it holds no ``cert.pem``."""
    from fedcare.transport.kit_history import kit_certs

    kit = recorded_kit(home) if home is not None else None
    return kit_certs(kit) if kit is not None and (kit / "cert.pem").is_file() else None
