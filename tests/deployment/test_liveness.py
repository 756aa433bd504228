"""No delivered task stalls its round (issue 10, finding 3).

A real coordinator over mutual TLS on 127.0.0.1 (:mod:`.bench`); the tests play its sites by
hand (``wire.py``), or run a real agent that misbehaves, while a round is collected through the
coordinator's own grid and the round loop's ``exchange``. Each scenario must end at once, or by
the round's deadline: a site that restarted, a reply refused as invalid (NaN, a sample count
of 2^31), an interrupted upload, a dropped download.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.records.protocol import PROTOCOL
from fedcare.site.agent import SiteAgent
from fedcare.transport.grpc import fedcare_pb2 as pb

from ..conftest import require_mirror
from .bench import (
    CUT,
    HEARTBEAT_S,
    IDLE_S,
    bench,
    say_hello,
    start_round,
    status_of,
    study,
    take,
    wait_until,
)
from .helpers import AgentThreads, heart_data
from .wire import Arena, answer, naming, push, reply_chunks, rpc_error

__all__ = ["bench", "study"]  # the fixtures this module uses


def test_a_restarted_site_fails_the_tasks_it_no_longer_holds_at_once(
    bench: Arena, study: str
) -> None:
    round_, rnd = start_round(bench, study, ["north", "south"], timeout=300.0)
    with bench.client("north") as north, bench.client("south") as south:
        take(north)  # then north "restarts": the task is gone with the old process
        assert push(south, reply_chunks(answer(take(south)))).accepted
        said_hello = time.monotonic()
        say_hello(north)  # a fresh process holds no task
    rnd.join(30)

    assert rnd.ended is not None and rnd.ended - said_hello < 10, "the round waited"
    assert [r.site_id for r in rnd.replies] == ["south"]
    reason = rnd.failures["north"]
    assert reason.startswith("site_restarted: site 'north' said Hello without holding"), reason
    assert status_of(bench, study, round_, "north") == "failed"


def test_a_site_that_reconnects_keeps_the_task_it_still_holds(bench: Arena, study: str) -> None:
    round_, rnd = start_round(bench, study, ["north"], timeout=300.0)
    with bench.client("north") as north:
        task = take(north)
        say_hello(north, held=[task.task_id])  # reconnected with the reply still to send
        assert status_of(bench, study, round_, "north") == "delivered"
        assert push(north, reply_chunks(answer(task))).accepted
    rnd.join(30)
    assert [r.site_id for r in rnd.replies] == ["north"] and rnd.failures == {}


BAD_REPLIES = {
    "NaN in the update": (
        {"arrays": ArrayRecord({"w": np.array([0.1, np.nan, 0.3]), "b": np.array([0.0])})},
        r"NaN or infinite",
    ),
    "2^31 samples": ({"num_samples": 2**31}, r"num_samples must be an int in \[0, 2147483647\]"),
}


@pytest.mark.parametrize("case", sorted(BAD_REPLIES))
def test_a_reply_refused_as_invalid_fails_its_task_at_once(
    bench: Arena, study: str, case: str
) -> None:
    changes, pattern = BAD_REPLIES[case]
    round_, rnd = start_round(bench, study, ["north", "south"], timeout=300.0)
    with bench.client("north") as north, bench.client("south") as south:
        task = take(north)
        assert push(south, reply_chunks(answer(take(south)))).accepted
        refused = time.monotonic()
        err = rpc_error(lambda: push(north, reply_chunks(answer(task, **changes))))
    rnd.join(30)

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert re.search(pattern, str(err.details())), err.details()
    assert rnd.ended is not None and rnd.ended - refused < 10, "the round waited"
    assert [r.site_id for r in rnd.replies] == ["south"], "the round goes on with south"
    reason = rnd.failures["north"]
    assert reason.startswith("invalid_reply: ") and re.search(pattern, reason), reason
    assert status_of(bench, study, round_, "north") == "failed"


def test_an_agent_does_not_resend_a_reply_refused_as_invalid(
    bench: Arena, study: str, tmp_path: Path
) -> None:
    require_mirror()
    data = heart_data("cleveland")
    [dataset] = data.describe()

    def nan_updates(agent: SiteAgent) -> None:  # a site whose training returns NaN
        def run(task: Task) -> Reply:
            return answer(task, arrays=ArrayRecord({"w": np.full(3, np.nan), "b": np.zeros(1)}))

        agent.worker.run = run  # type: ignore[method-assign]

    agents = AgentThreads()
    try:
        agents.start(
            bench.kits.sites["west"], data, address=bench.address, state_dir=tmp_path / "west",
            tamper=nan_updates,
        )  # fmt: skip
        wait_until(lambda: dataset in (bench.store.get_site("west").datasets or {}), 30)
        round_, rnd = start_round(bench, study, ["west"], timeout=300.0, dataset=dataset)
        rnd.join(60)
        reason = rnd.failures["west"]
        assert reason.startswith("invalid_reply: ") and "NaN" in reason, reason
        time.sleep(3 * HEARTBEAT_S)  # time enough to send it again, had the agent kept it
        events = list(agents.events["west"])
    finally:
        agents.close()
    assert sum("refused as invalid" in e for e in events) == 1, events
    assert not [e for e in events if "connection lost" in e], events
    assert status_of(bench, study, round_, "west") == "failed"


def test_an_interrupted_upload_is_cut_and_its_round_ends_by_the_deadline(
    bench: Arena, study: str
) -> None:
    deadline = 8.0
    round_, rnd = start_round(bench, study, ["north", "south"], timeout=deadline)
    started = time.monotonic()
    release = threading.Event()
    with bench.client("north") as north, bench.client("south") as south:
        task = take(north)
        assert push(south, reply_chunks(answer(take(south)))).accepted
        chunks = reply_chunks(answer(task))

        def stalls() -> Iterator[pb.Chunk]:
            yield chunks[0]
            release.wait(60)  # the link hangs mid-upload
            yield from chunks[1:]

        upload = time.monotonic()
        metadata = naming(task.task_id, chunks)
        err = rpc_error(lambda: north.PushReply(stalls(), timeout=60, metadata=metadata))
        cut_after = time.monotonic() - upload
        release.set()
    rnd.join(deadline + 30)

    assert err.code() in CUT, err
    assert IDLE_S - 0.5 <= cut_after < IDLE_S + 10, f"cut after {cut_after:.1f} s"
    assert rnd.ended is not None and rnd.ended - started < deadline + 10
    assert [r.site_id for r in rnd.replies] == ["south"]
    assert rnd.failures["north"] == "no reply before the deadline"
    assert status_of(bench, study, round_, "north") == "expired"


def test_a_download_the_site_drops_fails_its_task_at_once(bench: Arena, study: str) -> None:
    """At a site one minor behind (1.1), which cannot resume a download; a 1.2 site holds
    the task and resumes it (test_resumable_transfers.py)."""
    big = ArrayRecord({"w": np.zeros(5 << 20), "b": np.zeros(1)})  # 40 MiB: 40 chunks
    with bench.client("north") as north:
        say_hello(north, protocol=(PROTOCOL[0], PROTOCOL[1] - 1))
    round_, rnd = start_round(bench, study, ["north", "south"], timeout=300.0, params=big)
    with bench.client("north") as north, bench.client("south") as south:
        ok = push(south, reply_chunks(answer(take(south), arrays=big), chunk_size=1 << 20))
        assert ok.accepted, ok.message
        call = north.PullTask(pb.PullTaskRequest(wait_s=20), timeout=60)
        next(call)  # the first chunk arrives; then the site dies
        dropped = time.monotonic()
        call.cancel()
    rnd.join(30)

    assert rnd.ended is not None and rnd.ended - dropped < 10, "the round waited"
    assert [r.site_id for r in rnd.replies] == ["south"]
    reason = rnd.failures["north"]
    assert reason.startswith("download_interrupted: site 'north' did not take"), reason
    assert status_of(bench, study, round_, "north") == "failed"
    with bench.client("north") as north:
        say_hello(north)  # back to this protocol
