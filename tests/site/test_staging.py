"""A reply whose arrays are the worker's is staged as pieces, not framed again (site.staging).

The worker's side is the real hand-over (:class:`fedcare.site.worker_io.HandOver` and the
worker's ``_answer``, run in this process): it writes the reply framed to its file, and the
agent's side reads it mapped and, asked to keep it, moves it to ``transfers/reply-body.fcf``.
The coordinator is the fake of ``test_transfers.py`` (real :class:`Spool` and file chunks on
real files, cuts after a chosen chunk); the same against a real coordinator over mutual TLS is
in ``tests/deployment/test_streamed_transfers.py``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedcare.errors import ValidationError
from fedcare.records.messages import Reply, Task
from fedcare.site import worker_io
from fedcare.site.held import BODY_FILE, HEAD_FILE, HELD_FILE, REPLY_FILE, TRANSFERS_DIR
from fedcare.site.mods import audit_mod, chain
from fedcare.site.staging import KeptReply, same_arrays, stage_pieces
from fedcare.site.transfers import TaskTransfers
from fedcare.transport.framed import frame_reply, read_reply, write_file

from .governance_helpers import Recorder
from .test_transfers import CHUNK, FakeCoordinator, _reply, _task, _transfers


def _worker_reply(state: Path, task: Task) -> tuple[Reply, KeptReply | None]:
    """The worker's reply to ``task``, by the real hand-over files; kept in ``transfers/``."""
    folder = worker_io.io_dir(state)
    hand = worker_io.HandOver(folder, task, None, state / TRANSFERS_DIR / BODY_FILE)
    answer = worker_io._answer(json.loads(hand.request()), _reply)
    reply = hand.reply(json.dumps(answer).encode())
    hand.close()
    assert not list(folder.iterdir())  # the hand-over files are gone (the body moved out)
    return reply, hand.kept


def _open_mode(reply: Reply) -> Reply:
    """What the open-mode mods do: the header changes, the arrays are the same objects."""
    return replace(reply, metrics={**reply.metrics, "loss": 0.25}, info={"approval_id": "a-1"})


def _same_reply(got: Reply, want: Reply) -> None:
    assert (got.study_id, got.round, got.site_id, got.kind) == (
        want.study_id, want.round, want.site_id, want.kind,
    )  # fmt: skip
    assert (got.metrics, got.info, got.num_samples) == (want.metrics, want.info, want.num_samples)
    assert list(got.arrays) == list(want.arrays)
    for name in want.arrays:
        np.testing.assert_array_equal(got.arrays[name], want.arrays[name])
        assert got.arrays[name].dtype == want.arrays[name].dtype


def _staged_bytes(transfers: TaskTransfers) -> bytes:
    held = transfers.held
    assert held is not None
    pieces = transfers.store.pieces(held)
    assert pieces is not None
    return b"".join(pieces.blocks(block=4096))


def test_an_open_mode_reply_is_staged_as_its_header_and_the_workers_file(tmp_path: Path) -> None:
    task, state = _task(40_000), tmp_path / "state"
    transfers = _transfers(state)  # the agent's, from its start
    worker, kept = _worker_reply(state, task)
    assert kept is not None and kept.reply is worker
    body_size = kept.path.stat().st_size
    final = _open_mode(worker)
    transfers.stage(final, kept)
    folder = state / TRANSFERS_DIR
    joined = _staged_bytes(transfers)
    want = frame_reply(final).to_bytes()
    assert joined == want
    _same_reply(read_reply(joined), final)
    record = json.loads((folder / HELD_FILE).read_text())
    assert record["reply_size"] == len(want)
    assert record["reply_sha256"] == hashlib.sha256(want).hexdigest()
    assert [p["path"] for p in record["reply_pieces"]["pieces"]] == [HEAD_FILE, BODY_FILE]
    # no second copy of the arrays: the body is the worker's file, the header file is small
    sizes = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    assert sizes[BODY_FILE] == body_size > 300_000
    assert sizes[HEAD_FILE] < 4096 and sizes[HEAD_FILE] % 64 == 0
    assert REPLY_FILE not in sizes and sum(sizes.values()) < body_size + 8192
    # at the worker's next start its folder is cleared: the held body is not in it
    worker_io.clear(worker_io.io_dir(state))
    assert _transfers(state).held is not None and kept.path.exists()


def test_the_audit_digest_is_the_digest_uploaded(tmp_path: Path) -> None:
    task, state = _task(), tmp_path / "state"
    transfers = _transfers(state)
    audit = Recorder()
    got: list[KeptReply | None] = []

    def worker(task: Task) -> Reply:
        reply, kept = _worker_reply(state, task)
        got.append(kept)
        return reply

    final = chain([audit_mod(audit), lambda t, nxt: _open_mode(nxt(t))], worker)(task)
    [kept] = got
    transfers.stage(final, kept)
    [sent] = [data for event, data in audit.entries if event == "reply-sent"]
    assert transfers.held is not None and transfers.held.reply_pieces is not None
    digest = hashlib.sha256(_staged_bytes(transfers)).hexdigest()
    assert sent["sha256"] == transfers.held.reply_sha256 == digest
    assert sent["size_bytes"] == transfers.held.reply_size


def test_a_cut_upload_of_pieces_resumes_after_a_restart_with_the_same_bytes(
    tmp_path: Path,
) -> None:
    task, state = _task(), tmp_path / "state"
    fake = FakeCoordinator(tmp_path / "coordinator", task)
    transfers = _transfers(state)
    worker, kept = _worker_reply(state, task)
    final = _open_mode(worker)
    want = frame_reply(final).to_bytes()
    assert len(want) > 3 * CHUNK
    transfers.stage(final, kept)
    fake.cut_upload = 2
    with pytest.raises(grpc.RpcError):
        _transfers(state).upload(fake, timeout=10)
    restarted = _transfers(state)  # an agent restart in phase upload
    held = restarted.held
    assert held is not None and held.phase == "upload" and held.reply_pieces is not None
    assert restarted.upload(fake, timeout=10).accepted
    assert fake.received == [(0, 2 * CHUNK), (2 * CHUNK, len(want) - 2 * CHUNK)]
    assert restarted.uploaded == len(want) - 2 * CHUNK  # only the rest went again
    stored = fake.root / f"reply-{held.reply_sha256}"
    assert stored.read_bytes() == want
    [reply] = fake.replies
    _same_reply(reply, final)
    assert not list((state / TRANSFERS_DIR).glob("*.fcf*"))  # head and body removed


def test_an_old_coordinator_gets_the_pieces_as_one_whole_message(tmp_path: Path) -> None:
    task, state = _task(), tmp_path / "state"
    fake = FakeCoordinator(tmp_path / "coordinator", task)
    transfers = _transfers(state)
    worker, kept = _worker_reply(state, task)
    transfers.stage(_open_mode(worker), kept)
    assert transfers.held is not None and transfers.held.reply_pieces is not None
    fake.upload_status_error = grpc.StatusCode.UNIMPLEMENTED
    assert transfers.upload(fake, timeout=10).accepted
    [reply] = fake.replies
    _same_reply(reply, _open_mode(worker))
    assert transfers.held is None and not list((state / TRANSFERS_DIR).glob("*.fcf*"))


def test_a_reply_whose_arrays_changed_is_staged_whole(tmp_path: Path) -> None:
    task, state = _task(), tmp_path / "state"
    transfers = _transfers(state)
    worker, kept = _worker_reply(state, task)
    clipped = replace(worker, arrays=worker.arrays.scale(0.5))  # a privacy mode's new arrays
    assert kept is not None and not same_arrays(clipped, worker)
    transfers.stage(clipped, kept)
    folder = state / TRANSFERS_DIR
    assert transfers.held is not None and transfers.held.reply_pieces is None
    assert (folder / REPLY_FILE).read_bytes() == frame_reply(clipped).to_bytes()
    assert not (folder / BODY_FILE).exists() and not (folder / HEAD_FILE).exists()
    # reordered arrays are not the worker's either
    swapped = replace(
        worker, arrays=type(worker.arrays)(dict(reversed(list(worker.arrays.items()))))
    )
    assert not same_arrays(swapped, worker)


def test_a_body_file_that_is_not_the_replys_is_refused(tmp_path: Path) -> None:
    task, state = _task(), tmp_path / "state"
    events: list[str] = []
    transfers = TaskTransfers(state, "south", on_event=events.append, chunk_size=CHUNK)
    worker, kept = _worker_reply(state, task)
    assert kept is not None
    other = tmp_path / "other.fcf"
    smaller = Reply("st", 2, "south", "fit", arrays=_task(100).params, num_samples=1)
    write_file(frame_reply(smaller), other)
    with pytest.raises(ValidationError, match="holds arrays"):
        stage_pieces(worker, KeptReply(worker, other), tmp_path / "head.fcf")
    transfers.stage(worker, KeptReply(worker, other))  # framed whole, and said so
    assert transfers.held is not None and transfers.held.reply_pieces is None
    assert "framed whole" in events[0]


def test_a_held_record_without_pieces_still_loads_and_uploads(tmp_path: Path) -> None:
    task, state = _task(), tmp_path / "state"
    folder = state / TRANSFERS_DIR
    folder.mkdir(parents=True)
    framed = frame_reply(_reply(task))
    digest = write_file(framed, folder / REPLY_FILE)
    old = {  # a held.json written before reply_pieces
        "task": task.task_id, "phase": "upload", "size": None, "sha256": "",
        "reply_size": framed.size, "reply_sha256": digest,
        "files": {"task": "task.fcf", "reply": "reply.fcf"},
    }  # fmt: skip
    (folder / HELD_FILE).write_text(json.dumps(old))
    transfers = _transfers(state)
    assert transfers.held is not None and transfers.held.reply_pieces is None
    fake = FakeCoordinator(tmp_path / "coordinator", task)
    assert transfers.upload(fake, timeout=10).accepted
    [reply] = fake.replies
    np.testing.assert_array_equal(reply.arrays["w"], task.params["w"] * 0.5)


@pytest.mark.parametrize("damage", ["truncated", "missing", "outside", "size"])
def test_a_held_record_whose_pieces_do_not_hold_the_reply_is_dropped(
    tmp_path: Path, damage: str
) -> None:
    task, state = _task(), tmp_path / "state"
    transfers = _transfers(state)
    worker, kept = _worker_reply(state, task)
    transfers.stage(_open_mode(worker), kept)
    folder = state / TRANSFERS_DIR
    record = json.loads((folder / HELD_FILE).read_text())
    if damage == "truncated":
        with open(folder / BODY_FILE, "r+b") as f:
            f.truncate(1000)
    elif damage == "missing":
        (folder / HEAD_FILE).unlink()
    elif damage == "outside":
        record["reply_pieces"]["pieces"][0]["path"] = "../elsewhere.fcf"
    else:
        record["reply_size"] += 64
    (folder / HELD_FILE).write_text(json.dumps(record))
    events: list[str] = []
    transfers = TaskTransfers(state, "south", on_event=events.append)
    assert transfers.held is None and not list(folder.glob("*.fcf"))
    assert "dropped the held task record" in events[0]
