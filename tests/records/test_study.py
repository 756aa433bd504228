"""The study's task deadline: ``round_timeout``, or a default derived from its training."""

from __future__ import annotations

from fedcare.records.study import TASK_DEADLINE_FLOOR_S, TASK_DEADLINE_PER_EPOCH_S, StudyConfig


def _study(**overrides: object) -> StudyConfig:
    base = {"name": "s", "dataset": {"name": "heart-disease"}, "model": {"kind": "logistic"}}
    return StudyConfig.from_dict({**base, **overrides}, source="test")


def test_every_task_gets_a_finite_deadline_from_the_study() -> None:
    assert _study().task_deadline_s == TASK_DEADLINE_FLOOR_S
    many = _study(training={"epochs": 20})
    assert many.task_deadline_s == 20 * TASK_DEADLINE_PER_EPOCH_S > TASK_DEADLINE_FLOOR_S
    assert _study(round_timeout=42.0, training={"epochs": 20}).task_deadline_s == 42.0
