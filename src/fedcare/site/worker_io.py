"""The hand-over of a task and its reply between the agent and its worker subprocess, by file.

Over the pipe go only two paths, as JSON: ``{"task": PATH, "reply": PATH}`` from the agent,
``{"reply": PATH}`` (or ``{"error": WHY}``) back from the worker. The task is a framed payload
on disk (:mod:`fedcare.transport.framed`): the downloaded file itself when the agent offers it
(:meth:`fedcare.site.worker.TaskWorker.offer_file`: the task object it read from that file).
Governance mods may hand the worker a changed copy of that task (a site pipeline, a raised
``min_cell``): when its arrays are still the file's, the file is used and the changed
``config``, ``plan`` and ``pipeline`` travel beside the path as JSON (``"header"``), applied by
the worker after it reads the file. Any other task is framed into
``STATE/transfers/worker/task-<id>.fcf`` from views of its arrays. The worker reads it with
:func:`~fedcare.transport.framed.read_task` (a memory map: the model is not copied into the
worker's heap) and writes its reply framed to the path it was given; the agent reads that
with :func:`~fedcare.transport.framed.read_reply` and removes the file (the map stays valid),
unless the agent asked to keep it (``keep``: a reply it will stage for upload): then the file
is moved out of this folder to ``STATE/transfers/reply-body.fcf`` (:class:`~fedcare.site.
staging.KeptReply`), so that a reply whose arrays the mods left alone is uploaded from it
without the model being written again (:mod:`fedcare.site.staging`); :func:`clear` at a
worker's start never touches it. So neither process holds the encoded model as bytes, where
the pipe needed three copies.

The folder is under the state dir, which a sandboxed worker (bubblewrap) sees read-write at
the same resolved path (:class:`fedcare.packages.sandbox.SandboxSpec` ``writable_dir``), so
every path sent is resolved first. A task or reply file the worker cannot read or write is an
error reply of kind ``worker-io`` naming the file; a worker that dies or runs past the time
limit is handled by the caller as before (nothing here waits).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from fedcare.errors import ValidationError
from fedcare.records.messages import Reply, Task
from fedcare.site.held import TRANSFERS_DIR
from fedcare.site.staging import KeptReply
from fedcare.transport.framed import frame_reply, frame_task, read_reply, read_task, write_file

__all__ = ["IO_KIND", "WORKER_DIR", "HandOver", "io_dir", "serve"]

WORKER_DIR = "worker"
#: The error kind of a reply whose task or reply file could not be read or written.
IO_KIND = "worker-io"


def io_dir(state_dir: Path) -> Path:
    """``STATE/transfers/worker`` (resolved, created owner-only)."""
    folder = (Path(state_dir) / TRANSFERS_DIR / WORKER_DIR).resolve()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def clear(folder: Path) -> None:
    """Remove hand-over files left by a worker that died or was stopped."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)


class HandOver:
    """One task handed to the worker: the files it uses, removed by :meth:`close`; the reply
    file is moved to ``keep`` instead, when given, once read (:attr:`kept`)."""

    def __init__(
        self,
        folder: Path,
        task: Task,
        offered: tuple[Task, Path] | None,
        keep: Path | None = None,
    ) -> None:
        name = uuid.uuid4().hex
        self.task = task
        self.keep = keep
        self.kept: KeptReply | None = None
        self.reply_path = folder / f"reply-{name}.fcf"
        self.header = _header(task, offered[0]) if offered is not None else None
        self._own_task = self.header is None
        if self.header is None:
            self.task_path = folder / f"task-{name}.fcf"
            write_file(frame_task(task), self.task_path, digest=False)  # a hand-over
        else:
            assert offered is not None
            self.task_path = Path(offered[1]).resolve()

    def request(self) -> bytes:
        """What goes over the pipe."""
        said: dict[str, Any] = {"task": str(self.task_path), "reply": str(self.reply_path)}
        if self.header:
            said["header"] = self.header
        return json.dumps(said).encode()

    def reply(self, answer: bytes) -> Reply:
        """The reply the worker's ``answer`` points to (read from its file)."""
        said = json.loads(answer)
        if "error" in said:
            return Reply.failure(self.task, IO_KIND, str(said["error"]))
        try:
            reply = read_reply(self.reply_path)
        except ValidationError as err:
            return Reply.failure(self.task, IO_KIND, f"the worker's reply is unreadable: {err}")
        if self.keep is not None and reply.arrays:  # moved, not copied: the map stays valid
            try:
                os.replace(self.reply_path, self.keep)
            except OSError:
                return reply  # it cannot be kept: the agent frames the reply whole
            self.kept = KeptReply(reply, self.keep)
        return reply

    def close(self) -> None:
        """Remove the files (a mapped reply stays readable)."""
        for path in (self.reply_path, self.reply_path.with_name(self.reply_path.name + ".tmp")):
            path.unlink(missing_ok=True)
        if self._own_task:
            self.task_path.unlink(missing_ok=True)


def _header(task: Task, offered: Task) -> dict[str, Any] | None:
    """What to change in the file of ``offered`` to read ``task`` (``{}``: nothing); ``None``
    when ``task`` is not ``offered`` with another header (its file cannot be used)."""
    if task is offered:
        return {}
    same = (task.task_id, task.version) == (offered.task_id, offered.version)
    if not same or task.params is not offered.params or task.arrays is not offered.arrays:
        return None
    header = {"config": dict(task.config), "plan": dict(task.plan), "pipeline": dict(task.pipeline)}
    try:
        json.dumps(header, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return header


def serve(conn: Connection, handle: Callable[[Task], Reply]) -> None:
    """The worker's loop: read each task from its file, run it, write the reply framed."""
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except EOFError:
            return
        conn.send_bytes(json.dumps(_answer(request, handle)).encode())


def _answer(request: dict[str, Any], handle: Callable[[Task], Reply]) -> dict[str, str]:
    task_path, reply_path = str(request["task"]), str(request["reply"])
    try:
        task = read_task(task_path)
        if request.get("header"):  # the agent's mods changed these (fedcare.site.mods)
            task = replace(task, **request["header"])
    except ValidationError as err:
        return {"error": f"the worker cannot read its task file {task_path}: {err}"}
    reply = handle(task)
    try:
        write_file(frame_reply(reply), Path(reply_path), digest=False)  # a hand-over
    except (OSError, ValidationError) as err:
        return {"error": f"the worker cannot write its reply to {reply_path}: {err}"}
    del task, reply  # the task's map closes with its arrays
    return {"reply": reply_path}
