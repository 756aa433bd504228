"""Checking a log as ``fedcare audit verify`` does: the log, its head, and the heads others
anchored (:class:`~fedcare.audit.anchors.AnchorBook`), with the result in plain words.

Shared by the command line and the coordinator's HTTP API (``GET /api/v1/audit/verify``), so
both check the same things and say the same.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.audit._format import CertPaths
from fedcare.audit.anchors import SITE_ANCHORS_FILE, AnchorBook
from fedcare.audit.verify import VerifyResult, verify_log

__all__ = ["LogCheck", "check_log", "event_names", "read_entries"]


@dataclass(frozen=True)
class LogCheck:
    """A verification (``result``) and the anchored heads it required (``anchors``, read
    from ``book``)."""

    result: VerifyResult
    anchors: int
    book: Path

    def summary(self) -> str:
        """One line in plain words: intact (and what was checked), or where it is broken."""
        result = self.result
        if not result.ok:
            where = f" at line {result.first_bad}" if result.first_bad is not None else ""
            return f"The audit trail fails verification{where}: {result.reason}"
        text = f"The audit trail is intact: all {result.count} entries check out"
        if result.signatures_checked:
            text += " (hash chain, signatures and the signed head)"
        else:
            text += " (hash chain and head; the signatures were NOT checked: no certificate)"
        if self.anchors:
            text += f", and it still holds all {self.anchors} countersigned heads"
        return text + "."


def check_log(
    log: Path,
    *,
    cert_path: CertPaths | None = None,
    witness: Sequence[str] = (),
    anchors: Path | None = None,
) -> LogCheck:
    """Verify ``log`` (and ``<log>.head``) against the signer's certificates, the checkpoints
    ``witness`` someone else kept and the heads in ``anchors`` (default:
    ``audit-anchors.jsonl`` beside the log).

    Raises
    ------
    ConfigError
        If the log, a certificate or the anchor file cannot be read (names it).
    """
    book = anchors if anchors is not None else log.parent / SITE_ANCHORS_FILE
    held = [a.checkpoint for a in AnchorBook(book).read()]
    result = verify_log(log, cert_path=cert_path, witnessed=[*witness, *held])
    return LogCheck(result, len(held), book)


def read_entries(log: Path) -> list[dict[str, Any]]:
    """The entries of the audit log ``log`` as plain dicts, oldest first, unchecked: lines that
    do not parse are skipped (the verification names them); empty when there is no log.

    Raises
    ------
    OSError
        If the log exists but cannot be read.
    """
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def event_names(log: Path) -> set[str]:
    """The event names of the entries in ``log`` (lines that do not parse are skipped: the
    verification reports them); empty when the log cannot be read."""
    try:
        entries = read_entries(log)
    except OSError:
        return set()
    return {e["event"] for e in entries if isinstance(e.get("event"), str)}
