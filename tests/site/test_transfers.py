"""The site's streamed, resumable task and reply transfers (fedcare.site.transfers, .held).

The coordinator is played here by a small fake stub, so that a transfer is cut exactly after
a chosen chunk and every byte asked for again is counted: its side uses the real
:func:`~fedcare.transport.transfer.file_chunks` and :class:`~fedcare.transport.transfer.Spool`
on real files, as the coordinator does. The same module against a real coordinator over mutual
TLS (cuts of real gRPC calls, an agent restarted with a held task) is in
``tests/deployment/test_streamed_transfers.py``. An agent restart is a new
:class:`TaskTransfers` on the same state dir. Chunks are 4 KiB so that a 30 KiB task has 8.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedcare.errors import TransferIncompleteError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.site.held import HELD_FILE, TRANSFERS_DIR
from fedcare.site.transfers import REFUSED_KIND, TaskTransfers
from fedcare.transport.codec import decode_reply, encode_task
from fedcare.transport.framed import frame_reply, frame_task
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.transfer import Spool, file_chunks

CHUNK = 4096
SITE = "south"


class Cut(grpc.RpcError):
    """What a real call raises when the link fails (or the coordinator answers an error)."""

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, details: str = ""):
        self._code, self._details = code, details or code.name

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Call:
    """A server-streaming call: initial metadata, then chunks (cut after ``cut`` of them)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], chunks: Iterable[pb.Chunk]):
        self.metadata, self.chunks = metadata, chunks

    def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def __iter__(self) -> Iterator[pb.Chunk]:
        return iter(self.chunks)


class FakeCoordinator:
    """PullTask, Download, UploadStatus and PushReply over files; records what it sent and
    received. ``cut_download`` / ``cut_upload``: chunks after which the next call is cut."""

    def __init__(self, root: Path, task: Task, *, framed: bool = True) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.task_file = root / "task.payload"
        payload = frame_task(task).to_bytes() if framed else encode_task(task)
        self.task_file.write_bytes(payload)
        self.size, self.sha = len(payload), hashlib.sha256(payload).digest()
        self.key = task.task_id
        self.framed = framed
        self.cut_download: int | None = None
        self.cut_upload: int | None = None
        self.open = True  # the task is delivered to the site and open
        self.sent: list[list[Any]] = []  # [call, offset, bytes]
        self.received: list[tuple[int, int]] = []  # PushReply: (offset, bytes)
        self.replies: list[Reply] = []
        self.upload_status_error: grpc.StatusCode | None = None
        self.corrupt = False

    def _chunks(self, call: str, offset: int) -> Iterator[pb.Chunk]:
        pieces = file_chunks(
            self.task_file, sha256=self.sha, transfer_id="t", offset=offset, chunk_size=CHUNK
        )
        cut, self.cut_download = self.cut_download, None
        sent = [call, offset, 0]  # bytes sent, counted as they go
        self.sent.append(sent)
        for n, piece in enumerate(pieces):
            if cut is not None and n == cut:
                raise Cut()
            if self.corrupt and piece.index == 1:
                piece.data = bytes(len(piece.data))
            sent[2] += len(piece.data)
            yield piece

    def PullTask(self, request: Any, timeout: float) -> Call:
        if not self.framed:  # a task sent whole, as to a 1.1 site (or a deployment)
            return Call((), self._chunks("PullTask", 0))
        return Call((("fedcare-task", self.key),), self._chunks("PullTask", 0))

    def Download(self, request: Any, timeout: float) -> Call:
        assert request.task == self.key
        if not self.open:
            raise Cut(grpc.StatusCode.NOT_FOUND, f"task {self.key} is not open")
        return Call((), self._chunks("Download", int(request.offset)))

    def _spool(self, size: int, sha: bytes) -> Spool:
        return Spool(self.root / f"reply-{sha.hex()}", size=size, sha256=sha, chunk_size=CHUNK)

    def UploadStatus(self, request: Any, timeout: float) -> Any:
        if self.upload_status_error is not None:
            raise Cut(self.upload_status_error)
        assert request.task == self.key
        return pb.UploadStatusResponse(
            confirmed=self._spool(request.size, request.sha256).confirmed()
        )

    def PushReply(self, chunks: Iterator[pb.Chunk], timeout: float, metadata: Any) -> Any:
        md = dict(metadata)
        assert md["fedcare-task"] == self.key
        if "fedcare-sha256" not in md:  # a whole message
            payload = b"".join(c.data for c in chunks)
            self.received.append((0, len(payload)))
            self.replies.append(decode_reply(payload))
            return pb.PushReplyAck(accepted=True)
        size, sha = int(md["fedcare-size"]), bytes.fromhex(md["fedcare-sha256"])
        spool = self._spool(size, sha)
        offset = int(md["fedcare-offset"])
        assert offset == spool.confirmed(), "the upload must start where the coordinator is"
        cut, self.cut_upload = self.cut_upload, None
        got = 0

        def arriving() -> Iterator[pb.Chunk]:
            nonlocal got
            for n, piece in enumerate(chunks):
                if cut is not None and n == cut:
                    raise Cut()
                got += len(piece.data)
                yield piece

        try:
            done = spool.receive(arriving())
        finally:
            self.received.append((offset, got))
        from fedcare.transport.framed import read_reply

        self.replies.append(read_reply(done))
        return pb.PushReplyAck(accepted=True)


def _task(n: int = 3600) -> Task:
    params = ArrayRecord({"w": np.linspace(-1, 1, n), "b": np.arange(7, dtype=np.float32)})
    return Task(study_id="st", round=2, site_id=SITE, kind="fit", params=params, plan={"x": 1})


def _reply(task: Task) -> Reply:
    arrays = task.params.scale(0.5)
    return Reply(task.study_id, task.round, SITE, "fit", arrays=arrays, num_samples=9)


def _transfers(state: Path) -> TaskTransfers:
    transfers = TaskTransfers(state, SITE, chunk_size=CHUNK)
    transfers.begin(streamed=True)
    return transfers


def _pull(transfers: TaskTransfers, fake: FakeCoordinator) -> Any:
    return transfers.pull(fake, wait_s=1, timeout=10)


def _same_task(got: Any, task: Task) -> None:
    assert isinstance(got, Task) and got.task_id == task.task_id and got.plan == task.plan
    for name in ("w", "b"):
        np.testing.assert_array_equal(got.params[name], task.params[name])
    assert not got.params["w"].flags.writeable  # a view of the mapped file, not a copy
    base: Any = got.params["w"]
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base.obj if isinstance(base, memoryview) else base, mmap.mmap)


@pytest.mark.parametrize("cut", [0, 1, 3, 7])
def test_a_cut_download_resumes_with_only_the_rest(tmp_path: Path, cut: int) -> None:
    task = _task()
    fake = FakeCoordinator(tmp_path / "coordinator", task)
    assert fake.size > 7 * CHUNK  # 8 chunks, the last one partial
    transfers = _transfers(tmp_path / "state")
    fake.cut_download = cut
    with pytest.raises(Cut):
        _pull(transfers, fake)
    held = transfers.held
    assert held is not None and held.phase == "download" and held.task == task.task_id
    assert transfers.held_keys() == [task.task_id]  # listed at the next Hello
    part = tmp_path / "state" / TRANSFERS_DIR / "task.fcf.part"
    assert (part.stat().st_size if part.exists() else 0) == cut * CHUNK
    got = transfers.resume(fake, timeout=10)
    _same_task(got, task)
    # PullTask sent `cut` chunks, Download exactly the rest, from the first missing byte
    rest = fake.size - cut * CHUNK
    assert fake.sent == [["PullTask", 0, cut * CHUNK], ["Download", cut * CHUNK, rest]]
    assert transfers.downloaded == fake.size
    assert transfers.held is not None and transfers.held.phase == "run"


def test_a_download_cut_before_its_first_chunk_resumes_from_zero(tmp_path: Path) -> None:
    task = _task()
    fake = FakeCoordinator(tmp_path / "coordinator", task)
    transfers = _transfers(tmp_path / "state")
    fake.cut_download = 0
    with pytest.raises(Cut):
        _pull(transfers, fake)
    assert transfers.held is not None and transfers.held.size is None  # nothing declared yet
    restarted = _transfers(tmp_path / "state")
    _same_task(restarted.resume(fake, timeout=10), task)


def test_an_agent_restart_in_each_phase_goes_on_from_where_it_was(tmp_path: Path) -> None:
    task, state = _task(), tmp_path / "state"
    fake = FakeCoordinator(tmp_path / "coordinator", task)
    fake.cut_download = 5
    with pytest.raises(Cut):
        _pull(_transfers(state), fake)
    # restart in phase download: the part on disk is kept, Download sends the rest
    after = _transfers(state)
    assert after.held is not None and after.held.phase == "download"
    got = after.resume(fake, timeout=10)
    _same_task(got, task)
    assert fake.sent[-1] == ["Download", 5 * CHUNK, fake.size - 5 * CHUNK]
    # restart in phase run: the task is read again from its file, nothing is downloaded
    del got
    again = _transfers(state)
    assert again.held is not None and again.held.phase == "run"
    _same_task(again.resume(fake, timeout=10), task)
    assert len(fake.sent) == 2
    # restart in phase upload: the reply is sent from what the coordinator confirms
    again.stage(_reply(task))
    assert not (state / TRANSFERS_DIR / "task.fcf").exists()  # the task's file went
    fake.cut_upload = 2
    with pytest.raises(Cut):
        again.upload(fake, timeout=10)
    last = _transfers(state)
    assert last.held is not None and last.held.phase == "upload"
    assert last.held_keys() == [task.task_id]
    pushed = last.upload(fake, timeout=10)
    assert pushed.accepted
    size = frame_reply(_reply(task)).size
    assert size > 3 * CHUNK
    assert fake.received == [(0, 2 * CHUNK), (2 * CHUNK, size - 2 * CHUNK)]
    assert last.uploaded == size - 2 * CHUNK  # only the rest went again
    [reply] = fake.replies
    np.testing.assert_array_equal(reply.arrays["w"], task.params["w"] * 0.5)
    assert sorted(p.name for p in (state / TRANSFERS_DIR).iterdir()) == []  # all removed
    assert _transfers(state).held is None


def test_the_reply_file_is_the_framed_reply_with_its_digest(tmp_path: Path) -> None:
    task, state = _task(), tmp_path / "state"
    transfers = _transfers(state)
    transfers.stage(_reply(task))
    record = json.loads((state / TRANSFERS_DIR / HELD_FILE).read_text())
    data = (state / TRANSFERS_DIR / "reply.fcf").read_bytes()
    assert data == frame_reply(_reply(task)).to_bytes()
    assert record["reply_size"] == len(data)
    assert record["reply_sha256"] == hashlib.sha256(data).hexdigest()
    assert record["phase"] == "upload" and record["task"] == task.task_id
    assert stat.S_IMODE((state / TRANSFERS_DIR).stat().st_mode) == 0o700  # owner-only


def test_a_task_the_coordinator_took_back_is_dropped(tmp_path: Path) -> None:
    task = _task()
    fake = FakeCoordinator(tmp_path / "coordinator", task)
    transfers = _transfers(tmp_path / "state")
    fake.cut_download = 2
    with pytest.raises(Cut):
        _pull(transfers, fake)
    fake.open = False  # NOT_FOUND: no longer delivered to this site
    assert transfers.resume(fake, timeout=10) is None
    assert transfers.held is None and not list((tmp_path / "state" / TRANSFERS_DIR).iterdir())


def test_a_corrupted_download_is_answered_with_an_error_and_not_run(tmp_path: Path) -> None:
    task = _task()
    fake = FakeCoordinator(tmp_path / "coordinator", task)
    fake.corrupt = True
    transfers = _transfers(tmp_path / "state")
    got = _pull(transfers, fake)
    assert isinstance(got, Reply) and got.error is not None and got.error.kind == REFUSED_KIND
    assert "SHA-256 does not match" in got.error.message
    assert (got.study_id, got.round, got.kind, got.site_id) == ("st", 2, "fit", SITE)
    assert transfers.held is None


def test_an_upload_refused_or_no_longer_wanted_is_dropped(tmp_path: Path) -> None:
    task, state = _task(), tmp_path / "state"
    fake = FakeCoordinator(tmp_path / "coordinator", task)
    transfers = _transfers(state)
    transfers.stage(_reply(task))
    fake.upload_status_error = grpc.StatusCode.NOT_FOUND
    pushed = transfers.upload(fake, timeout=10)
    assert not pushed.accepted and "dropped" in pushed.message
    assert transfers.held is None and not list((state / TRANSFERS_DIR).iterdir())
    transfers.stage(_reply(task))
    fake.upload_status_error = grpc.StatusCode.UNAVAILABLE  # a link error: kept
    with pytest.raises(Cut):
        transfers.upload(fake, timeout=10)
    assert transfers.held is not None and (state / TRANSFERS_DIR / "reply.fcf").exists()


def test_a_coordinator_without_upload_status_gets_the_whole_message(tmp_path: Path) -> None:
    task, state = _task(), tmp_path / "state"
    fake = FakeCoordinator(tmp_path / "coordinator", task)
    transfers = _transfers(state)
    transfers.stage(_reply(task))
    fake.upload_status_error = grpc.StatusCode.UNIMPLEMENTED
    assert transfers.upload(fake, timeout=10).accepted
    [reply] = fake.replies
    np.testing.assert_array_equal(reply.arrays["w"], task.params["w"] * 0.5)
    assert transfers.whole_upload and transfers.held is None


def test_a_task_sent_whole_is_kept_in_a_file_in_a_streamed_session(tmp_path: Path) -> None:
    task, state = _task(), tmp_path / "state"
    fake = FakeCoordinator(tmp_path / "coordinator", task, framed=False)
    got = _pull(_transfers(state), fake)
    assert isinstance(got, Task) and got.task_id == task.task_id
    restarted = _transfers(state)
    assert restarted.held is not None and restarted.held.phase == "run"
    again = restarted.resume(fake, timeout=10)
    assert isinstance(again, Task)
    np.testing.assert_array_equal(again.params["w"], task.params["w"])
    # before 1.2 (not streamed) nothing is kept: the old in-memory path
    old = TaskTransfers(tmp_path / "old", SITE, chunk_size=CHUNK)
    old.begin(streamed=False)
    assert isinstance(_pull(old, fake), Task) and old.held is None


def test_an_unreadable_held_record_is_dropped_with_its_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    folder = state / TRANSFERS_DIR
    folder.mkdir(parents=True)
    (folder / HELD_FILE).write_text('{"task": "st/2/fit/south", "phase": "sleeping"}')
    (folder / "task.fcf.part").write_bytes(b"x" * 10)
    events: list[str] = []
    transfers = TaskTransfers(state, SITE, on_event=events.append)
    assert transfers.held is None and not list(folder.iterdir())
    assert "phase 'sleeping'" in events[0]


def test_a_cut_without_an_error_is_an_incomplete_transfer(tmp_path: Path) -> None:
    """A stream that just ends early (no gRPC error) keeps the part too."""
    task = _task()
    fake = FakeCoordinator(tmp_path / "coordinator", task)
    transfers = _transfers(tmp_path / "state")
    short = Call((("fedcare-task", task.task_id),), list(fake._chunks("PullTask", 0))[:3])
    fake.PullTask = lambda request, timeout: short  # type: ignore[method-assign]
    with pytest.raises(TransferIncompleteError, match="is cut"):
        _pull(transfers, fake)
    assert transfers.resume(fake, timeout=10) is not None
    assert fake.sent[-1] == ["Download", 3 * CHUNK, fake.size - 3 * CHUNK]
