"""One audit entry: the record a caller gets back, and the structural check of a stored line."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedcare.audit._format import (
    ENTRY_FIELDS,
    HEX64,
    canonical,
    check_event,
    entry_hash,
    parse_time,
)
from fedcare.errors import ValidationError

__all__ = ["AuditEntry", "check_line"]


@dataclass(frozen=True)
class AuditEntry:
    """One entry of an audit log, as written.

    ``prev_hash`` and ``signature`` are stored under the keys ``prev`` and ``sig``.
    """

    seq: int
    time: str
    event: str
    actor: str
    data: Mapping[str, Any]
    prev_hash: str
    hash: str
    signature: str

    def to_record(self) -> dict[str, Any]:
        """The entry as the JSON object stored on its line."""
        return {
            "seq": self.seq,
            "time": self.time,
            "event": self.event,
            "actor": self.actor,
            "data": dict(self.data),
            "prev": self.prev_hash,
            "hash": self.hash,
            "sig": self.signature,
        }

    def to_line(self) -> bytes:
        """The stored line: canonical JSON and ``\\n``."""
        return canonical(self.to_record()) + b"\n"

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AuditEntry:
        """An entry from a stored JSON object; ValidationError naming the bad field."""
        problem = _structure_problem(record)
        if problem:
            raise ValidationError(f"audit entry {dict(record)!r:.200}: {problem}")
        return cls(
            seq=record["seq"],
            time=record["time"],
            event=record["event"],
            actor=record["actor"],
            data=record["data"],
            prev_hash=record["prev"],
            hash=record["hash"],
            signature=record["sig"],
        )


def _field_problem(record: Mapping[str, Any]) -> str | None:
    seq = record["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return f"field 'seq' must be a positive integer, got {seq!r:.40}"
    for name in ("time", "event", "actor", "sig"):
        if not isinstance(record[name], str) or not record[name]:
            return f"field {name!r} must be a non-empty string, got {record[name]!r:.40}"
    for name in ("prev", "hash"):
        if not isinstance(record[name], str) or not HEX64.fullmatch(record[name]):
            return f"field {name!r} must be 64 lowercase hex digits, got {record[name]!r:.80}"
    if not isinstance(record["data"], dict):
        return f"field 'data' must be a JSON object, got {type(record['data']).__name__}"
    try:
        parse_time(record["time"])
        check_event(record["event"])
    except (ValueError, ValidationError) as err:
        return str(err)
    return None


def _structure_problem(record: Any) -> str | None:
    if not isinstance(record, Mapping):
        return f"line is a JSON {type(record).__name__}, not an object"
    keys = set(record)
    if keys != ENTRY_FIELDS:
        missing, extra = sorted(ENTRY_FIELDS - keys), sorted(keys - ENTRY_FIELDS)
        return f"line has wrong fields (missing {missing}, unexpected {extra})"
    return _field_problem(record)


def check_line(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one stored line (without its ``\\n``) and check everything it holds by itself.

    Returns ``(record, None)`` when the line is canonical JSON of a well-formed entry whose
    ``hash`` matches its content, else ``(record_or_None, why)``. Chain and signature are the
    caller's business (they need the neighbours and the key).
    """
    if not line:
        return None, "line is empty"
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "line is not valid UTF-8"
    except ValueError:
        return None, "line is not valid JSON"
    problem = _structure_problem(record)
    if problem:
        return None, problem
    try:
        canon = canonical(record)
    except ValueError:
        return None, "line holds NaN or infinity"
    if canon != line:
        return None, "line is not in canonical JSON form (bytes or whitespace were edited)"
    if entry_hash(record) != record["hash"]:
        return record, "hash does not match its content"
    return record, None
