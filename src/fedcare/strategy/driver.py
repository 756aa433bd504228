"""Run a whole study over any grid: the part simulation and the coordinator share.

``start_study`` does round 0 — the federated statistics round when the plan standardizes with
global statistics, then the initial parameters — and ``continue_study`` runs the one round
loop from any completed round. Simulation calls both back to back over an in-memory grid; the
coordinator persists what each returns and, after a crash, resumes with ``continue_study``
from its last checkpoint, so both paths give the same model for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from fedcare.analytics.federated import federated_feature_moments
from fedcare.models.registry import build_model
from fedcare.records.arrays import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.strategy.base import Strategy, StrategyState
from fedcare.strategy.loop import RoundConfig, RoundRecord, run_rounds
from fedcare.strategy.registry import build_strategy
from fedcare.transport.base import Grid

__all__ = ["StudyStart", "continue_study", "round_config", "start_study", "study_strategy"]

OnRound = Callable[[RoundRecord, StrategyState], None]


@dataclass(frozen=True)
class StudyStart:
    """What round 0 produced: the initial state and arrays every task carries."""

    state: StrategyState
    task_arrays: Mapping[str, ArrayRecord] = field(default_factory=dict)


def study_strategy(study: StudyConfig, num_sites: int, *, baseline: bool = False) -> Strategy:
    """The study's strategy; baselines (one site, or pooled data) train with plain FedAvg."""
    return build_strategy(
        "fedavg" if baseline else study.strategy.name,
        {} if baseline else study.strategy.options,
        train=study.training.as_config(),
        fraction=1.0 if baseline else study.fraction,
        min_sites=max(1, min(study.min_sites, num_sites)),
    )


def round_config(
    study: StudyConfig, study_id: str, task_arrays: Mapping[str, ArrayRecord] | None = None
) -> RoundConfig:
    """The loop's view of ``study`` (the plan travels with every task)."""
    return RoundConfig(
        study_id=study_id,
        num_rounds=study.rounds,
        seed=study.seed,
        plan={**study.plan(), "dataset": study.dataset.name},
        task_arrays=dict(task_arrays or {}),
        round_timeout=study.round_timeout,
        evaluate_every=study.evaluate_every,
    )


def start_study(
    grid: Grid,
    study: StudyConfig,
    strategy: Strategy,
    study_id: str,
    input_shape: tuple[int, ...],
) -> StudyStart:
    """Round 0: global statistics if the plan needs them, then the initial parameters."""
    task_arrays: dict[str, ArrayRecord] = {}
    if study.preprocessing.scale == "global":
        moments = federated_feature_moments(grid, round_config(study, study_id))
        task_arrays["preprocess"] = moments.as_record()
    adapter = build_model(study.model)
    params = adapter.init_params(input_shape, np.random.default_rng([study.seed, 0]))
    return StudyStart(state=strategy.init_state(params), task_arrays=task_arrays)


def continue_study(
    grid: Grid,
    study: StudyConfig,
    strategy: Strategy,
    study_id: str,
    start: StudyStart,
    *,
    start_round: int = 1,
    on_round: OnRound | None = None,
) -> tuple[StrategyState, list[RoundRecord]]:
    """Run rounds ``start_round..study.rounds`` from ``start.state``."""
    cfg = replace(round_config(study, study_id), task_arrays=dict(start.task_arrays))
    return run_rounds(grid, strategy, start.state, cfg, start_round=start_round, on_round=on_round)
