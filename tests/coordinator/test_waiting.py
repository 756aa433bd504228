"""The runner's waits, decided without a network or a clock (fedcare.coordinator.waiting)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fedcare.coordinator.waiting import (
    Backoff,
    RoundWaits,
    Withdrawals,
    awaiting_approval,
    duration_text,
)
from fedcare.errors import RoundFailedError

T0 = datetime(2026, 12, 4, 17, 0, tzinfo=timezone.utc)
PLAN = "3fa2" + "0" * 60


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def failed(round: int = 3) -> RoundFailedError:
    return RoundFailedError(
        f"round {round}: 1 usable replies, min_sites is 2; failures: {{'va': 'timeout'}}",
        round=round,
        replied=1,
        required=2,
    )


def test_backoff_doubles_to_its_cap() -> None:
    assert [Backoff(5, 60).delay(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    with pytest.raises(ValueError):
        Backoff(10, 5)


def test_only_a_round_missing_nothing_but_approvals_waits_for_them() -> None:
    waiting = {"cleveland": "ok", "va": "plan-not-approved", "hungary": "plan-not-approved"}
    assert awaiting_approval(waiting) == ["hungary", "va"]
    assert awaiting_approval({**waiting, "zurich": "no-reply"}) == []
    assert awaiting_approval({"va": "approval-revoked"}) == []
    # an expired approval waits for its renewal as a missing one waits for a decision
    assert awaiting_approval({"va": "approval-expired", "zurich": "ok"}) == ["va"]
    assert awaiting_approval({"va": "approval-expired", "hungary": "plan-not-approved"}) == [
        "hungary",
        "va",
    ]
    assert awaiting_approval({}) == []
    assert duration_text(86400) == "24 h" and duration_text(90 * 60) == "90 min"


def test_ordinary_failures_retry_with_backoff_and_say_so_then_give_up() -> None:
    waits = RoundWaits(retries=3, approval_wait_s=3600, backoff=Backoff(5, 60))
    notes = [waits.after_failure(failed(), {"va": "no-reply"}, PLAN) for _ in range(3)]
    assert [d.delay_s for d in notes] == [5, 10, 20]
    assert notes[1].note.startswith("round 3 failed: 1 usable replies, min_sites is 2;")
    assert notes[1].note.endswith("; retry 2 of 3 in 10 s")
    assert notes[1].event == "round-failed" and notes[1].data["retry_in_s"] == 10
    last = waits.after_failure(failed(), {"va": "no-reply"}, PLAN)
    assert last.error is not None and "(gave up after 3 retries)" in str(last.error)
    waits.round_done()  # a completed round: the next failure is the first again
    assert waits.after_failure(failed(4), {}, PLAN).note.endswith("retry 1 of 3 in 5 s")


def test_awaiting_approval_costs_no_retry_and_fails_at_its_stated_deadline() -> None:
    clock = Clock()
    waits = RoundWaits(retries=1, approval_wait_s=86400, backoff=Backoff(5, 60), clock=clock)
    outcomes = {"hungary": "plan-not-approved", "va": "plan-not-approved", "good": "ok"}
    first = waits.after_failure(failed(1), outcomes, PLAN)
    assert first.error is None and first.delay_s == 5 and first.event == "study-waiting"
    assert first.note.startswith(
        f"waiting: awaiting approval at hungary, va (plan {PLAN}; until 2026-12-05 17:00:00 UTC)"
    )
    delays = []
    for _ in range(8):  # many more polls than round_retries: none of them is a retry
        clock.advance(30)
        decision = waits.after_failure(failed(1), outcomes, PLAN)
        assert decision.error is None and decision.event is None
        delays.append(decision.delay_s)
    assert delays == [10, 20, 40, 60, 60, 60, 60, 60]
    clock.advance(86400)
    late = waits.after_failure(failed(1), outcomes, PLAN)
    assert late.error is not None
    assert str(late.error).startswith(
        "plan not approved at hungary, va within 24 h (deadline 2026-12-05 17:00:00 UTC)"
    )
    assert waits.failures == 0


def test_an_approval_wait_is_cut_short_by_its_deadline() -> None:
    clock = Clock()
    waits = RoundWaits(retries=3, approval_wait_s=7, backoff=Backoff(5, 60), clock=clock)
    assert waits.after_failure(failed(1), {"va": "plan-not-approved"}, PLAN).delay_s == 5
    clock.advance(5)
    assert waits.after_failure(failed(1), {"va": "plan-not-approved"}, PLAN).delay_s == 2


def test_a_withdrawn_site_is_withheld_with_backoff_until_it_says_hello_again() -> None:
    clock = Clock()
    sites = Withdrawals(Backoff(30, 600), clock=clock)
    until = sites.withdrew("hungary", "approval-revoked", hello=1)
    assert until == T0 + timedelta(seconds=30) and sites.withheld("hungary", 1)
    assert sites.active(lambda s: 1) == {
        "hungary": "approval-revoked; not asked again before 2026-12-04 17:00:30 UTC"
    }
    assert not sites.withheld("hungary", 2)  # a new Hello: offered again at once
    clock.advance(30)
    assert not sites.withheld("hungary", 1) and sites.active(lambda s: 1) == {}
    delays = []
    for _ in range(6):  # refused again each time it is offered: the delay grows to its cap
        delays.append((sites.withdrew("hungary", "plan-refused", 1) - clock()).total_seconds())
        clock.advance(delays[-1])
    assert delays == [60, 120, 240, 480, 600, 600]
    sites.answered("hungary")  # took part again: its next withdrawal starts afresh
    assert (sites.withdrew("hungary", "approval-revoked", 1) - clock()).total_seconds() == 30
