"""Shared bits of the site governance tests: a study, its plan, tasks and an audit recorder."""

from __future__ import annotations

from typing import Any

from fedcare.records.messages import Task
from fedcare.records.plan import TrainingPlan
from fedcare.records.study import StudyConfig
from fedcare.strategy.plan import plan_for_study

TRAINING = {"epochs": 1, "lr": 0.05, "batch_size": 16, "optimizer": "sgd", "l2": 0.01}


def study(**overrides: Any) -> StudyConfig:
    base: dict[str, Any] = {
        "name": "heart",
        "dataset": {"name": "heart-disease"},
        "model": {"kind": "logistic"},
        "preprocessing": {"impute": "mean", "scale": "local"},
        "training": TRAINING,
        "rounds": 5,
    }
    return StudyConfig.from_dict({**base, **overrides})


def plan(**overrides: Any) -> TrainingPlan:
    return plan_for_study(study(**overrides))


def task(
    kind: str = "fit",
    *,
    task_plan: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    round: int = 1,
) -> Task:
    the_plan = plan().to_task_plan() if task_plan is None else task_plan
    if config is None:
        config = {**plan().training, "seed": 3} if kind == "fit" else {"seed": 3}
    return Task(
        study_id="st-1", round=round, site_id="a", kind=kind,  # type: ignore[arg-type]
        config=config, plan=the_plan,
    )  # fmt: skip


class Recorder:
    """An audit sink that keeps entries in memory."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []

    def append(self, event: str, /, **data: Any) -> object:
        self.entries.append((event, data))
        return None

    @property
    def events(self) -> list[str]:
        return [e for e, _ in self.entries]

    def last(self, event: str) -> dict[str, Any]:
        return [d for e, d in self.entries if e == event][-1]
