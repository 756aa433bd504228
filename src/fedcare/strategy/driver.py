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

from fedcare.aggregation.base import Aggregator
from fedcare.analytics.federated import federated_feature_moments
from fedcare.grid import Grid
from fedcare.models.registry import PackageBuilder, build_model
from fedcare.records.arrays import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.secure.he.base import HEBackend
from fedcare.strategy.base import Strategy, StrategyState
from fedcare.strategy.loop import RoundConfig, RoundRecord, run_rounds
from fedcare.strategy.modes import (
    AVAILABLE_PRIVACY_MODES,
    baseline_composition,
    check_privacy_mode,
    mode_composition,
)
from fedcare.strategy.plan import check_strategy_matches_study, plan_for_study
from fedcare.strategy.registry import build_strategy

__all__ = [
    "AVAILABLE_PRIVACY_MODES",
    "StudyStart",
    "check_privacy_mode",
    "continue_study",
    "round_config",
    "start_study",
    "study_strategy",
]

OnRound = Callable[[RoundRecord, StrategyState], None]


@dataclass(frozen=True)
class StudyStart:
    """What round 0 produced: the initial state and arrays every task carries."""

    state: StrategyState
    task_arrays: Mapping[str, ArrayRecord] = field(default_factory=dict)
    #: The sites whose sums made the global statistics (connected when the study began, and
    #: whose sums passed the checks of :mod:`fedcare.analytics.moments_check`).
    statistics_sites: tuple[str, ...] = ()
    #: Sites left out of the statistics round, with the reason (refused, failed, implausible).
    statistics_rejected: Mapping[str, str] = field(default_factory=dict)

    def take_state(self) -> StrategyState:
        """The initial state, handed over once: this start holds it no more.

        The round loop drops a state when the next round replaces it; a start kept for its
        task arrays would otherwise keep the initial model alive all study (400 MB more at
        the coordinator for a 100M-parameter model). A second take raises.
        """
        state = self.state
        if state is None:
            raise RuntimeError("the study start's state was already handed to the round loop")
        object.__setattr__(self, "state", None)  # frozen for callers; consumed here only
        return state


def study_strategy(
    study: StudyConfig,
    num_sites: int,
    *,
    baseline: bool = False,
    he_context: HEBackend | None = None,
) -> Strategy:
    """The study's strategy; baselines (one site, or pooled data) train with plain FedAvg.

    The study's privacy mode composes the aggregator, the protocol layer around it, the DP-SGD
    task config and ``min_sites`` (:func:`fedcare.strategy.modes.mode_composition`). What a
    (non-baseline) strategy sends to sites, its fit config and its aggregation pipeline's site
    half, is checked to be what the study's plan fixes
    (:func:`fedcare.strategy.plan.check_strategy_matches_study`): sites derive both from
    the approved plan and refuse anything else.

    ``he_context``: the coordinator's public HE context (mode ``encrypted``; ``None`` in
    simulation, which uses its own simulated federation keys).
    """
    check_privacy_mode(study)
    if baseline:
        mode = baseline_composition(study, num_sites)
    else:
        mode = mode_composition(study, num_sites, he_context=he_context)
    strategy = build_strategy(
        "fedavg" if baseline else study.strategy.name,
        {} if baseline else study.strategy.options,
        train={**study.training.as_config(), **mode.train},
        fraction=1.0 if baseline else study.fraction,
        min_sites=mode.min_sites,
        aggregator=mode.aggregator,
    )
    strategy = mode.protocol(strategy)  # secure sum or encrypted sum outermost, if any
    if not baseline:  # sites refuse any other fit config or pipeline than the plan's
        check_strategy_matches_study(strategy, study)
    return strategy


def round_config(
    study: StudyConfig, study_id: str, task_arrays: Mapping[str, ArrayRecord] | None = None
) -> RoundConfig:
    """The loop's view of ``study`` (the plan travels with every task)."""
    return RoundConfig(
        study_id=study_id,
        num_rounds=study.rounds,
        seed=study.seed,
        plan={**study.plan(), **plan_for_study(study).to_task_plan()},
        task_arrays=dict(task_arrays or {}),
        round_timeout=study.round_timeout,
        round_grace_s=study.round_grace_s,
        evaluate_every=study.evaluate_every,
    )


def start_study(
    grid: Grid,
    study: StudyConfig,
    strategy: Strategy,
    study_id: str,
    input_shape: tuple[int, ...],
    *,
    packages: PackageBuilder | None = None,
) -> StudyStart:
    """Round 0: global statistics if the plan needs them, then the initial parameters.

    ``packages`` builds a study package's adapter (the coordinator's sandboxed runner);
    ``None`` loads it in this process (simulation).
    """
    task_arrays: dict[str, ArrayRecord] = {}
    statistics_sites: tuple[str, ...] = ()
    rejected: dict[str, str] = {}
    if study.preprocessing.scale == "global":  # sites with bad or no sums are left out
        cfg = round_config(study, study_id)
        width = input_shape[0] if len(input_shape) == 1 else None
        stats = federated_feature_moments(
            grid, cfg, sorted(grid.site_ids()), min_sites=strategy.min_sites, width=width
        )
        task_arrays["preprocess"] = stats.moments.as_record()
        statistics_sites, rejected = stats.sites, stats.rejected
    adapter = build_model(study.model, packages=packages)
    params = adapter.init_params(input_shape, np.random.default_rng([study.seed, 0]))
    return StudyStart(strategy.init_state(params), task_arrays, statistics_sites, rejected)


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
    """Run rounds ``start_round..study.rounds`` from ``start.state`` (taken: see
    :meth:`StudyStart.take_state`)."""
    # The site half of the aggregation stack (e.g. norm bounding) travels with every task.
    aggregator = getattr(strategy, "aggregator", None)
    pipeline = dict(aggregator.site_spec()) if isinstance(aggregator, Aggregator) else {}
    cfg = replace(
        round_config(study, study_id), task_arrays=dict(start.task_arrays), pipeline=pipeline
    )
    # handed over, not kept here: the loop frees it once round 1 replaces it
    return run_rounds(
        grid, strategy, start.take_state(), cfg, start_round=start_round, on_round=on_round
    )
