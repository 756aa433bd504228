"""Deadline-bound rounds on a real coordinator over mutual TLS: the round closes once its
quorum replied and the grace period passed; a late reply is refused naming the closed round,
recorded (the task's ``late_at``, a ``late-reply`` audit entry) and never taken into a round."""

from __future__ import annotations

import time

import grpc

from fedcare.grid import Quorum
from fedcare.transport.grpc import fedcare_pb2 as pb

from .bench import SITES, bench, start_round, study, take  # noqa: F401  (fixtures)
from .wire import RPC_TIMEOUT_S, Arena, answer, push, reply_chunks, rpc_error

GRACE_S = 0.6


def test_a_round_closes_after_its_quorum_and_grace_and_refuses_the_late_reply(
    bench: Arena,  # noqa: F811
    study: str,  # noqa: F811
) -> None:
    round_, collected = start_round(bench, study, SITES, timeout=30.0, quorum=Quorum(2, GRACE_S))
    with (
        bench.client("north") as north,
        bench.client("south") as south,
        bench.client("west") as west,
    ):
        tasks = {"north": take(north), "south": take(south), "west": take(west)}
        assert push(north, reply_chunks(answer(tasks["north"]))).accepted
        assert push(south, reply_chunks(answer(tasks["south"]))).accepted
        quorum_at = time.monotonic()
        collected.join(10)  # west trains on; the round does not wait for it
        assert collected.ended is not None
        assert GRACE_S - 0.05 <= collected.ended - quorum_at < GRACE_S + 1.0
        assert sorted(r.site_id for r in collected.replies) == ["north", "south"]
        closed_why = "round closed (a grace period of 0.6 s after 2 sites replied"
        assert closed_why in collected.failures["west"]
        assert sorted(collected.arrivals) == ["north", "south"]

        [closed] = [t for t in bench.store.list_tasks(study, round_) if t.site_id == "west"]
        assert closed.status == "expired" and closed.closed_at is not None
        late = answer(tasks["west"])
        status = pb.UploadStatusRequest(task=tasks["west"].task_id, sha256=b"\0" * 32, size=1)
        err = rpc_error(lambda: west.UploadStatus(status, timeout=RPC_TIMEOUT_S))
        assert err.code() == grpc.StatusCode.NOT_FOUND  # the site drops it and moves on
        assert f"round {round_} closed at" in err.details()
        ack = push(west, reply_chunks(late))
        assert not ack.accepted and ack.error_kind == "round_closed"
        assert f"round {round_} closed at {closed.closed_at.isoformat()}" in ack.message
        assert "recorded but taken into no round" in ack.message

        # recorded once, not stored as a reply of any round
        [noted] = [t for t in bench.store.list_tasks(study, round_) if t.site_id == "west"]
        assert noted.late_at is not None and noted.late_at >= noted.closed_at
        assert sorted(r.site_id for r in bench.store.replies_for_round(study, round_, 1)) == [
            "north",
            "south",
        ]
        entries = [d for e, d in bench.coordinator.audit.entries(study) if e == "late-reply"]
        assert [(d["site"], d["round"], d["kind"]) for d in entries] == [("west", round_, "fit")]
        assert entries[0]["arrived_at"] == noted.late_at.isoformat()

        # the next round takes only its own replies: west's late one answers no task of it
        next_round, second = start_round(bench, study, SITES, timeout=30.0)
        fresh = {"north": take(north), "south": take(south), "west": take(west)}
        assert {t.round for t in fresh.values()} == {next_round}
        again = push(west, reply_chunks(late))  # sent again: refused again, noted once
        assert not again.accepted and again.error_kind == "round_closed"
        for site, stub in (("north", north), ("south", south), ("west", west)):
            assert push(stub, reply_chunks(answer(fresh[site]))).accepted
        second.join(10)
    assert sorted((r.site_id, r.round) for r in second.replies) == [
        (s, next_round) for s in sorted(SITES)
    ]
    stored = bench.store.replies_for_round(study, next_round, 1)
    assert sorted(r.site_id for r in stored) == sorted(SITES)
    assert [e for e, _ in bench.coordinator.audit.entries(study)].count("late-reply") == 1
