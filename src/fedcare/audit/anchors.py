"""Anchors: a log's head held by the other side, so a rollback is detected without a witness.

A log and its signed head can be replaced together by an older copy of both, and nothing local
notices (:mod:`fedcare.audit.log`). So each side hands its head to the other:

- a site sends its head ``(seq, hash)``, signed with its kit key (:func:`anchor_message`), to
  the coordinator, which checks it against the last head it holds for the site (the new head
  must be at or after it, and the site's log must still hold the anchored entry), keeps it and
  countersigns it (:func:`countersign_message`);
- the coordinator sends its own head, signed with its key (a head signature), to the site.

Each side keeps what the other anchored in an :class:`AnchorBook` (a JSON-lines file beside
its log: ``audit-anchors.jsonl`` for the site's countersigned heads, ``coordinator-heads.jsonl``
for the coordinator's). ``fedcare audit verify`` uses a site's countersigned anchors as
witnessed checkpoints: a log rolled back behind one fails, naming the entry.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from fedcare.audit._format import HEX64, canonical
from fedcare.audit.head import Checkpoint
from fedcare.errors import ConfigError

__all__ = [
    "COORDINATOR_HEADS_FILE",
    "SITE_ANCHORS_FILE",
    "Anchor",
    "AnchorBook",
    "anchor_message",
    "countersign_message",
    "entry_hash_at",
]

SITE_ANCHORS_FILE = "audit-anchors.jsonl"
COORDINATOR_HEADS_FILE = "coordinator-heads.jsonl"
_ANCHOR_DOMAIN = b"fedcare-audit-anchor\x00"
_COUNTERSIGN_DOMAIN = b"fedcare-audit-countersign\x00"


def anchor_message(site_id: str, seq: int, hash_: str) -> bytes:
    """What a site signs when it anchors its head ``(seq, hash)`` at the coordinator."""
    return _ANCHOR_DOMAIN + f"{site_id}:{seq}:{hash_}".encode()


def countersign_message(site_id: str, seq: int, hash_: str, at: str) -> bytes:
    """What the coordinator signs when it countersigns a site's head at time ``at``."""
    return _COUNTERSIGN_DOMAIN + f"{site_id}:{seq}:{hash_}:{at}".encode()


@dataclass(frozen=True)
class Anchor:
    """A head held for the other side: ``(seq, hash)`` with the signature that vouches for it
    (the coordinator's countersignature, or the coordinator's head signature) and when."""

    seq: int
    hash: str
    sig: str
    at: str

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.seq, self.hash)


class AnchorBook:
    """An append-only JSON-lines file of anchors (thread-safe; lines are fsynced)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[Anchor]:
        return iter(self.read())

    def read(self) -> list[Anchor]:
        """Every anchor, oldest first; ConfigError naming the file and line if one is bad."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as err:
            raise ConfigError(f"anchor file {self.path} cannot be read ({err})") from None
        out = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                anchor = Anchor(int(doc["seq"]), str(doc["hash"]), str(doc["sig"]), str(doc["at"]))
            except (ValueError, KeyError, TypeError) as err:
                raise ConfigError(
                    f"anchor file {self.path} line {number} is invalid ({err})"
                ) from None
            if anchor.seq < 0 or not HEX64.fullmatch(anchor.hash):
                raise ConfigError(f"anchor file {self.path} line {number} has a bad seq or hash")
            out.append(anchor)
        return out

    def newest(self) -> Anchor | None:
        anchors = self.read()
        return max(anchors, key=lambda a: a.seq) if anchors else None

    def add(self, anchor: Anchor) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, canonical(asdict(anchor)) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)


def entry_hash_at(log_path: Path, seq: int) -> str | None:
    """The ``hash`` the log at ``log_path`` holds at entry ``seq`` (None if it ends before).

    Reads line ``seq`` only as far as needed; not a verification (:func:`verify_log` is).
    """
    if seq <= 0:
        return "0" * 64
    try:
        with open(log_path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if number == seq:
                    if not line.endswith(b"\n"):
                        return None
                    try:
                        value = json.loads(line).get("hash")
                    except (ValueError, AttributeError):
                        return None
                    return value if isinstance(value, str) else None
    except FileNotFoundError:
        return None
    return None
