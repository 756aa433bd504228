"""No delivered task stalls its round, and no site can starve the others (issue 10, findings 3, 6).

A real coordinator over mutual TLS on 127.0.0.1 (streams idle for ``IDLE_S`` seconds are cut);
the tests play its sites by hand (``wire.py``), or run a real agent that misbehaves, while a
round is collected through the coordinator's own grid and the round loop's ``exchange`` (so a
failure shows as the loop records it for the round). Each scenario must end at once, or by
the round's deadline: a site that restarted, a reply refused as invalid (NaN, a sample count
of 2^31), an interrupted upload. One site holding 200 long-polls or 70 stalled uploads must
not delay another site's Heartbeat, and a refused oversized reply must cost the coordinator
less than two chunks of memory.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

import fedcare
from fedcare.coordinator.grid import CoordinatorGrid
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import MESSAGE_VERSION, Reply, Task
from fedcare.site.agent import SiteAgent
from fedcare.strategy.base import Instruction
from fedcare.strategy.loop import RoundConfig, exchange
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.grpc.fedcare_pb2_grpc import CoordinatorStub

from ..conftest import require_mirror
from .helpers import AgentThreads, heart_data, provision, running_coordinator
from .wire import (
    ARENA_PARAMS,
    NOWHERE,
    RPC_TIMEOUT_S,
    Arena,
    answer,
    naming,
    pull,
    push,
    reply_chunks,
    rpc_error,
)

SITES = ("north", "south", "west")
PROBE = "probe"  # the dataset the hand-played sites offer; no study trains on it
IDLE_S = 3.0  # the coordinator cuts a stream that made no progress for this long
HEARTBEAT_S = 1.0  # "another site's heartbeat answers within 1 s"
CUT = (grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED)  # how a site sees a cut stream
ROUNDS = itertools.count(1)  # a fresh round of the module's study for each round played


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    """A real coordinator with hand-played sites that offer ``PROBE``."""
    root = tmp_path_factory.mktemp("liveness")
    kits = provision(root / "federation", SITES, name="liveness")
    with running_coordinator(
        kits, root / "home", liveness_s=120.0, stream_idle_s=IDLE_S
    ) as coordinator:
        arena = Arena(kits, coordinator)
        for site in SITES:
            with arena.client(site) as stub:
                say_hello(stub)
        yield arena


@pytest.fixture(scope="module")
def study(bench: Arena) -> str:
    """A running study whose runner leaves its tasks alone (its dataset is offered nowhere)."""
    return bench.idle_study("liveness", keep=True)


def say_hello(stub: CoordinatorStub, held: Sequence[str] = ()) -> pb.HelloResponse:
    request = pb.HelloRequest(
        site_version="test",
        message_version=MESSAGE_VERSION,
        datasets_json=json.dumps({PROBE: {}}),
        held_tasks=list(held),
    )
    response: pb.HelloResponse = stub.Hello(request, timeout=RPC_TIMEOUT_S)
    return response


@dataclass
class Round:
    """One round's fit exchange, collected by the coordinator's grid in a thread."""

    replies: list[Reply] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    ended: float | None = None  # time.monotonic() when the exchange ended
    thread: threading.Thread | None = None

    def join(self, timeout: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert self.ended is not None, f"the round did not end within {timeout} s"


def start_round(
    bench: Arena,
    study_id: str,
    sites: Sequence[str],
    *,
    timeout: float,
    dataset: str = PROBE,
    params: ArrayRecord = ARENA_PARAMS,
) -> tuple[int, Round]:
    """Send a fit task to each of ``sites`` and collect the replies, as the round loop does."""
    round_ = next(ROUNDS)
    grid = CoordinatorGrid(
        bench.store, bench.store.artifacts, bench.coordinator.hub, study_id, dataset,
        liveness_s=120.0,
    )  # fmt: skip
    cfg = RoundConfig(
        study_id=study_id, num_rounds=1, seed=0, plan={"dataset": NOWHERE}, round_timeout=timeout
    )
    out = Round()

    def collect() -> None:
        ins = [Instruction(site) for site in sites]
        out.replies.extend(exchange(grid, cfg, round_, "fit", params, ins, out.failures))
        out.ended = time.monotonic()

    out.thread = threading.Thread(target=collect, name=f"round-{round_}", daemon=True)
    out.thread.start()
    return round_, out


def take(stub: CoordinatorStub) -> Task:
    task = pull(stub, wait_s=20)
    assert task is not None, "no task was delivered"
    return task


def status_of(bench: Arena, study_id: str, round_: int, site: str) -> str:
    [task] = [t for t in bench.store.list_tasks(study_id, round_) if t.site_id == site]
    return task.status


def heartbeat_times(stub: CoordinatorStub, n: int = 5) -> list[float]:
    """Seconds each of ``n`` Heartbeats took (the call fails past 10 s)."""
    times = []
    for _ in range(n):
        start = time.monotonic()
        stub.Heartbeat(pb.HeartbeatRequest(state="idle"), timeout=10)
        times.append(time.monotonic() - start)
        time.sleep(0.1)
    return times


# Finding 3: a delivered task that is never answered ------------------------------------------
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
        _wait_until(lambda: dataset in (bench.store.get_site("west").datasets or {}), 30)
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
    big = ArrayRecord({"w": np.zeros(5 << 20), "b": np.zeros(1)})  # 40 MiB: 40 chunks
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


# Finding 6: resource exhaustion ---------------------------------------------------------------
def test_200_long_polls_from_one_site_leave_another_sites_heartbeat_fast(bench: Arena) -> None:
    with bench.client("south") as south, bench.client("north") as north:
        request = pb.PullTaskRequest(wait_s=30)
        calls = [south.PullTask(request, timeout=60) for _ in range(200)]
        try:
            refused = _wait_for_codes(calls, grpc.StatusCode.RESOURCE_EXHAUSTED, 198, 20)
            times = heartbeat_times(north)
            open_polls = [c for c in calls if not c.done()]
        finally:
            for call in calls:
                call.cancel()
    assert len(refused) >= 198 and "already has 2 open PullTask calls" in refused[0].details()
    assert len(open_polls) <= 2, "one site held more than its limit of long-polls"
    assert max(times) < HEARTBEAT_S, f"north's heartbeats took {times}"
    lanes = {t.name.rsplit("_", 1)[0] for t in threading.enumerate() if t.name.startswith("grpc")}
    assert "grpc-control" in lanes, f"Heartbeat did not run on its own threads: {lanes}"


def test_70_stalled_uploads_from_one_site_leave_another_sites_heartbeat_fast(
    bench: Arena, study: str
) -> None:
    release = threading.Event()
    with bench.client("south") as south, bench.client("north") as north:
        task = bench.open_task(south, "south", study, round=next(ROUNDS))
        first = reply_chunks(answer(task))[0]

        def stalls() -> Iterator[pb.Chunk]:
            yield first
            release.wait(60)

        metadata = naming(task.task_id, [first])
        uploads = [
            south.PushReply.future(stalls(), timeout=60, metadata=metadata) for _ in range(70)
        ]
        try:
            refused = _wait_for_codes(uploads, grpc.StatusCode.RESOURCE_EXHAUSTED, 68, 20)
            times = heartbeat_times(north)
            cut = _wait_for_codes(uploads, CUT, 2, IDLE_S + 15)
        finally:
            release.set()
            for upload in uploads:
                upload.cancel()
    assert len(refused) == 68 and "open PushReply calls" in refused[0].details()
    assert max(times) < HEARTBEAT_S, f"north's heartbeats took {times}"
    assert len(cut) == 2, "the stalled uploads within the limit were not cut"
    assert status_of(bench, study, task.round, "south") == "delivered", "a cut is no refusal"


CHUNK = 1 << 20  # the agents' chunk size
PUSH_BIG = """
import json, sys
import grpc
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.grpc.fedcare_pb2_grpc import CoordinatorStub
from fedcare.transport.tls import channel_credentials
kit, address, task, chunk, total = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:])
piece = bytes(chunk)
def chunks():  # 256 MiB declared and streamed, built one chunk at a time
    for i in range(total):
        yield pb.Chunk(transfer_id="big", index=i, total=total, total_size=total * chunk,
                       sha256=bytes(32), data=piece)
size = ("fedcare-size", str(total * chunk))
metadata = (("fedcare-task", task), size) if task else (size,)
with grpc.secure_channel(address, channel_credentials(kit)) as channel:
    try:
        ack = CoordinatorStub(channel).PushReply(chunks(), timeout=120, metadata=metadata)
        print(json.dumps({"code": "OK", "details": ack.error_kind + ": " + ack.message}))
    except grpc.RpcError as err:
        print(json.dumps({"code": err.code().name, "details": err.details()}))
"""


@pytest.mark.parametrize(
    ("case", "code", "pattern"),
    [
        ("for its open task", "INVALID_ARGUMENT", r"declares 268435456 bytes, above the limit"),
        ("naming no task", "INVALID_ARGUMENT", r"names no task"),
        ("for a task never sent", "OK", r"unknown_task"),
    ],
)
def test_a_refused_oversized_reply_costs_the_coordinator_under_two_chunks(
    bench: Arena, study: str, case: str, code: str, pattern: str
) -> None:
    """A 256 MiB reply in 1 MiB chunks, refused before its payload is read.

    Method: the site is a separate process, so everything Python allocates in this process
    during the call is the coordinator's (its gRPC threads run here). ``tracemalloc`` gives
    the peak of those allocations above the level before the call: it must stay under two
    chunks. The process's peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) also
    covers gRPC's own buffers; it gets a looser bound, still far below the 256 MiB a reply
    read to the end would cost. (Measured on the development machine: a peak of 0.07 to 0.17
    MiB traced, +4 to +9 MiB peak RSS; the coordinator before this check grew by +812 MiB.)
    """
    with bench.client("south") as south:
        task = bench.open_task(south, "south", study, round=next(ROUNDS))
    named = {
        "for its open task": task.task_id,
        "naming no task": "",
        "for a task never sent": f"{study}/{task.round + 1000}/fit/south",
    }[case]
    args = [str(bench.kits.sites["south"]), bench.address, named, str(CHUNK), "256"]
    env = {**os.environ, "PYTHONPATH": str(Path(fedcare.__file__).parents[1])}

    rss_reset = _reset_peak_rss()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        done = subprocess.run(
            [sys.executable, "-c", PUSH_BIG, *args], capture_output=True, text=True, timeout=120,
            env=env,
        )  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    rss_growth = _peak_rss() - rss_reset if rss_reset else None

    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["code"] == code and re.search(pattern, outcome["details"]), outcome
    assert peak < 2 * CHUNK, f"the coordinator allocated {peak / CHUNK:.2f} chunks"
    if rss_growth is not None:
        assert rss_growth < 64 * CHUNK, f"the coordinator's RSS grew {rss_growth / CHUNK:.0f} MiB"
    expected = "failed" if case == "for its open task" else "delivered"
    assert status_of(bench, study, task.round, "south") == expected


# helpers ---------------------------------------------------------------------------------------
def _wait_until(condition: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def _wait_for_codes(
    calls: Sequence[Any],
    code: grpc.StatusCode | tuple[grpc.StatusCode, ...],
    n: int,
    timeout: float,
) -> list[Any]:
    """The calls that ended with ``code`` (or one of them), once ``n`` have (or at ``timeout``)."""
    codes = code if isinstance(code, tuple) else (code,)
    end = time.monotonic() + timeout
    while True:
        ended = [c for c in calls if c.done() and c.code() in codes]
        if len(ended) >= n or time.monotonic() > end:
            return ended
        time.sleep(0.05)


def _reset_peak_rss() -> int:
    """Reset this process's peak RSS to its current RSS; return it (0 if not possible)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return 0
    return _peak_rss()


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0
