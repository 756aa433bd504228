"""A real coordinator whose sites the liveness and exhaustion tests play by hand.

Streams idle for ``IDLE_S`` seconds are cut; rounds are collected through the coordinator's
own grid and the round loop's ``exchange``, so a failure shows as the loop records it.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from fedcare.coordinator.grid import CoordinatorGrid
from fedcare.grid import Quorum
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import MESSAGE_VERSION, Reply, Task
from fedcare.records.protocol import PROTOCOL
from fedcare.strategy.base import Instruction
from fedcare.strategy.loop import RoundConfig, exchange
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.grpc.fedcare_pb2_grpc import CoordinatorStub

from .helpers import provision, running_coordinator
from .wire import ARENA_PARAMS, NOWHERE, RPC_TIMEOUT_S, Arena, pull

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


def say_hello(
    stub: CoordinatorStub, held: Sequence[str] = (), protocol: tuple[int, int] = PROTOCOL
) -> pb.HelloResponse:
    request = pb.HelloRequest(
        site_version="test",
        message_version=MESSAGE_VERSION,
        datasets_json=json.dumps({PROBE: {}}),
        held_tasks=list(held),
        protocol_major=protocol[0],
        protocol_minor=protocol[1],
    )
    response: pb.HelloResponse = stub.Hello(request, timeout=RPC_TIMEOUT_S)
    return response


@dataclass
class Round:
    """One round's fit exchange, collected by the coordinator's grid in a thread."""

    replies: list[Reply] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    ended: float | None = None  # time.monotonic() when the exchange ended
    arrivals: dict[str, float] = field(default_factory=dict)  # seconds from its start
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
    again: int | None = None,
    quorum: Quorum | None = None,
) -> tuple[int, Round]:
    """Send a fit task to each of ``sites`` and collect the replies, as the round loop does
    (in a fresh round, or ``again`` in that round, as after a restart or a retry), closing
    early after ``quorum``, if any."""
    round_ = next(ROUNDS) if again is None else again
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
        replies = exchange(
            grid, cfg, round_, "fit", params, ins, out.failures,
            quorum=quorum, arrivals=out.arrivals,
        )  # fmt: skip
        out.replies.extend(replies)
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


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def wait_for_codes(
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
