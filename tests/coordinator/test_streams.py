"""The size a reply to a task may have, derived from the task's own payload."""

from __future__ import annotations

from fedcare.coordinator.streams import (
    ARRAY_REPLY_FACTOR,
    ARRAY_REPLY_FLOOR,
    SMALL_REPLY_BYTES,
    reply_limit,
)

MIB = 1 << 20


def test_a_fit_reply_may_be_a_few_times_its_task_and_never_above_the_ceiling() -> None:
    assert (
        reply_limit("fit", 10 * MIB, 1 << 31) == ARRAY_REPLY_FACTOR * 10 * MIB + ARRAY_REPLY_FLOOR
    )
    assert reply_limit("secagg", 0, 1 << 31) == ARRAY_REPLY_FLOOR
    assert reply_limit("fit", 1 << 30, 100 * MIB) == 100 * MIB


def test_aggregate_replies_are_small_whatever_the_model() -> None:
    for kind in ("evaluate", "stats", "analytics"):
        assert reply_limit(kind, 1 << 30, 1 << 31) == SMALL_REPLY_BYTES
