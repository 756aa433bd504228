"""Repeated connection failures are logged sparsely: the 1st, 2nd, 4th, 8th, … time, or after
a quiet period."""

from __future__ import annotations

from fedcare.site.retry_log import FailureLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_first_failure_is_logged_in_full_and_repeats_at_powers_of_two() -> None:
    clock = Clock()
    log = FailureLog(quiet_s=300, clock=clock)
    lines = [log.failed("connection refused at h:1", 30.0) for _ in range(9)]
    assert lines[0] == "cannot reach the coordinator: connection refused at h:1; retrying in 30 s"
    logged = {i + 1: line for i, line in enumerate(lines) if line is not None}
    assert sorted(logged) == [1, 2, 4, 8]
    assert logged[8] == "still failing: connection refused at h:1 (attempt 8, next try in 30 s)"


def test_a_new_cause_is_logged_at_once_and_a_quiet_period_logs_again() -> None:
    clock = Clock()
    log = FailureLog(quiet_s=300, clock=clock)
    for _ in range(5):
        log.failed("A", 1.0)
    assert log.failed("B", 2.5, lost=False) == "cannot reach the coordinator: B; retrying in 2.5 s"
    assert log.failed("B", 2.5) == "still failing: B (attempt 7, next try in 2.5 s)"
    assert log.failed("B", 2.5) is None  # B for the 3rd time
    clock.now = 1000.0
    assert log.failed("B", 2.5) == "still failing: B (attempt 9, next try in 2.5 s)"


def test_reconnecting_says_how_many_attempts_failed_and_starts_over() -> None:
    log = FailureLog()
    assert log.connected() is None
    log.failed("A", 1.0, lost=True)
    log.failed("A", 1.0)
    assert log.connected() == "reconnected after 2 failed attempts"
    assert log.failed("A", 1.0, lost=True) == "connection lost: A; retrying in 1.0 s"
