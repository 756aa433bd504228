"""The task a site agent holds, persisted, so an agent restart knows what it was doing.

An agent serves one task at a time, and with protocol 1.2 (:data:`STREAMED_TRANSFERS`) that
task lives in files under ``STATE/transfers/`` (owner-only) from its first chunk to the
coordinator's acknowledgement of its reply::

    held.json   {"task": "study/round/kind/site", "phase": "download" | "run" | "upload",
                 "size": N, "sha256": hex, "reply_size": N, "reply_sha256": hex,
                 "reply_pieces": null | {"version": 1, "pieces": [{"path", "offset", "length"}]},
                 "files": {"task": "task.fcf", "reply": "reply.fcf", ...}}
    task.fcf        the task payload (framed; ``task.fcf.part`` while it downloads)
    reply.fcf       the framed reply, once the task ran; or, when its arrays are the worker's,
    reply-head.fcf  its header (:mod:`fedcare.site.staging`) and
    reply-body.fcf  the worker's reply file, whose arrays follow that header: the reply is
                    ``reply_pieces`` (:class:`~fedcare.transport.pieces.Pieces`, paths relative
                    to ``transfers/``), checked at load to hold ``reply_size`` bytes on disk

A record written before ``reply_pieces`` existed (none) reads as a reply in ``reply.fcf``.

``held.json`` is replaced atomically (a temporary file, fsynced, renamed) at each change of
phase, so a crash leaves the old record or the new one. After a restart the agent lists the
task in Hello's ``held_tasks`` (so the coordinator does not fail it) and goes on with the
phase: ``download`` resumes from the whole chunks on disk, ``run`` runs the task again from
its file, ``upload`` asks the coordinator how much of the reply it holds and sends the rest.
A record that cannot be read (a torn disk, an edited file) is dropped with its files: the
coordinator then fails the task at the next Hello, which is what an agent without the record
would have caused.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from fedcare.errors import ValidationError
from fedcare.transport.pieces import Pieces

__all__ = [
    "BODY_FILE",
    "HEAD_FILE",
    "HELD_FILE",
    "REPLY_FILE",
    "TASK_FILE",
    "TRANSFERS_DIR",
    "Held",
    "HeldStore",
]

TRANSFERS_DIR = "transfers"
HELD_FILE = "held.json"
TASK_FILE = "task.fcf"
REPLY_FILE = "reply.fcf"
HEAD_FILE = "reply-head.fcf"
BODY_FILE = "reply-body.fcf"
Phase = Literal["download", "run", "upload"]
PHASES: tuple[Phase, ...] = ("download", "run", "upload")


@dataclass
class Held:
    """The held task: its key, phase, and the size and SHA-256 (hex) of its files."""

    task: str
    phase: Phase
    size: int | None = None  # the task payload's (None: no chunk of it arrived yet)
    sha256: str = ""
    reply_size: int | None = None
    reply_sha256: str = ""
    #: The reply as pieces of files (``Pieces.to_json``, parsed); ``None``: all in ``reply.fcf``.
    reply_pieces: dict[str, Any] | None = None
    files: dict[str, str] = field(
        default_factory=lambda: {
            "task": TASK_FILE, "reply": REPLY_FILE, "reply_head": HEAD_FILE, "reply_body": BODY_FILE
        }
    )  # fmt: skip

    @classmethod
    def from_json(cls, data: object) -> Held:
        """The record in ``data`` (parsed ``held.json``); ``ValueError`` naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("held.json is not an object")
        task, phase = data.get("task"), data.get("phase")
        if not isinstance(task, str) or task.count("/") < 3:
            raise ValueError(f"held.json names no task ('study/round/kind/site'): {task!r}")
        if phase not in PHASES:
            raise ValueError(f"held.json has phase {phase!r}; expected one of {PHASES}")
        held = cls(task, cast(Phase, phase))
        for name in ("size", "reply_size"):
            value = data.get(name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"held.json has {name}={value!r}")
            setattr(held, name, value)
        for name in ("sha256", "reply_sha256"):
            value = data.get(name, "")
            if not isinstance(value, str) or (value and len(bytes.fromhex(value)) != 32):
                raise ValueError(f"held.json has {name}={value!r}")
            setattr(held, name, value)
        if phase == "upload" and (held.reply_size is None or not held.reply_sha256):
            raise ValueError("held.json is in phase upload without the reply's size and SHA-256")
        pieces = data.get("reply_pieces")
        if pieces is not None and (not isinstance(pieces, dict) or phase != "upload"):
            raise ValueError(f"held.json has reply_pieces={pieces!r} in phase {phase!r}")
        held.reply_pieces = pieces
        return held


class HeldStore:
    """``STATE/transfers/``: the held record and its files (created owner-only)."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / TRANSFERS_DIR
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        self.task_file = self.root / TASK_FILE
        self.reply_file = self.root / REPLY_FILE
        self.head_file = self.root / HEAD_FILE
        self.body_file = self.root / BODY_FILE
        self._record = self.root / HELD_FILE
        self.problem = ""  # why a record found at start was dropped
        self.held = self._load()

    def _load(self) -> Held | None:
        try:
            text = self._record.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._remove_files()  # files without a record belong to no task
            return None
        try:
            held = Held.from_json(json.loads(text))
            pieces = self.pieces(held)
            if pieces is not None:  # the files the record names still hold the reply
                pieces.check()
        except (ValueError, ValidationError) as err:  # json.JSONDecodeError is a ValueError
            self.problem = f"dropped the held task record {self._record}: {err}"
            self.clear()
            return None
        return held

    def pieces(self, held: Held) -> Pieces | None:
        """The held reply's pieces (``None``: it is all in ``reply.fcf``).

        Raises
        ------
        ValidationError
            If the record's pieces are invalid, leave this folder, or do not add up to the
            reply's size.
        """
        if held.reply_pieces is None:
            return None
        pieces = Pieces.from_json(json.dumps(held.reply_pieces), self.root)
        if pieces.size != held.reply_size:
            raise ValidationError(
                f"held.json's reply_pieces hold {pieces.size} bytes, its reply_size is "
                f"{held.reply_size}"
            )
        return pieces

    def save(self, held: Held) -> None:
        """Make ``held`` the record (atomically)."""
        tmp = self._record.with_name(HELD_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(held), out, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self._record)
        self.held = held

    def clear(self) -> None:
        """Forget the held task: its record, then its files."""
        self._record.unlink(missing_ok=True)
        self.held = None
        self._remove_files()

    def _remove_files(self) -> None:
        for path in self.root.iterdir():
            if path.is_dir() and path.name == "worker":
                continue  # the worker's hand-over files (fedcare.site.worker)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
