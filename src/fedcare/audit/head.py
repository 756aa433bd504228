"""The signed head checkpoint beside a log: ``<log>.head`` holds the newest ``(seq, hash)``.

It is one canonical JSON line ``{"hash","seq","sig","version"}`` whose ``sig`` signs
``HEAD_DOMAIN + "seq:hash"`` (never the bare hash, so no entry signature doubles as a head).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from fedcare.audit._format import GENESIS, HEAD_FIELDS, HEAD_VERSION, HEX64, canonical

__all__ = ["Checkpoint", "head_path", "parse_head", "read_head"]

Head = tuple[int, str, str]


def head_path(log_path: Path) -> Path:
    """Where the head checkpoint of the log at ``log_path`` lives."""
    return log_path.with_name(log_path.name + ".head")


def parse_head(data: bytes, where: object = "head checkpoint") -> Head:
    """``(seq, hash, sig)`` from the bytes of a head file; ValueError saying what is wrong."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except ValueError:
        raise ValueError(f"head checkpoint {where} is not valid JSON") from None
    if not isinstance(doc, dict) or set(doc) != HEAD_FIELDS:
        raise ValueError(f"head checkpoint {where} does not hold exactly {sorted(HEAD_FIELDS)}")
    seq, hash_, sig = doc["seq"], doc["hash"], doc["sig"]
    if doc["version"] != HEAD_VERSION:
        raise ValueError(f"head checkpoint {where} has unsupported version {doc['version']!r}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError(f"head checkpoint {where} has a bad seq {seq!r:.40}")
    if not isinstance(hash_, str) or not HEX64.fullmatch(hash_) or not isinstance(sig, str):
        raise ValueError(f"head checkpoint {where} has a bad hash or signature")
    if seq == 0 and hash_ != GENESIS:
        raise ValueError(f"head checkpoint {where} names entry 0 with a non-zero hash")
    if canonical(doc) + b"\n" != data:
        raise ValueError(f"head checkpoint {where} is not in canonical form (edited bytes)")
    return seq, hash_, sig


def read_head(path: Path) -> Head | None:
    """The head at ``path``, None if there is no file; ValueError if it is corrupt."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse_head(data, path)


class Checkpoint(NamedTuple):
    """A log's position ``(seq, hash)``, for a witness to keep: ``str()`` gives ``seq:hash``.

    Another participant (the coordinator for a site, say) stores the checkpoints it is shown;
    :func:`fedcare.audit.verify_log` with ``witnessed=`` then catches a rollback or rewrite
    of history below them, which the local head checkpoint alone cannot.
    """

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """A checkpoint from ``seq:hash``; ValueError naming the text if it is not one."""
        seq, _, hash_ = str(text).partition(":")
        if not seq.isdigit() or not HEX64.fullmatch(hash_):
            raise ValueError(f"audit checkpoint {text!r:.100} is not 'seq:hash'")
        return cls(int(seq), hash_)
