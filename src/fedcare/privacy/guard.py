"""A study's budget guard: refuse the round that would take its epsilon past ``privacy.epsilon``.

One pure function for every place a study's rounds run: the coordinator's runner
(:mod:`fedcare.coordinator.runner`) and ``fedcare simulate`` (:mod:`fedcare.simulation.run`)
both call :func:`guard_next_round` before each round, with the records of the rounds already
completed, so a study that a coordinator would refuse also fails in simulation, with the same
:class:`~fedcare.errors.PrivacyBudgetError` message.

The study's epsilon composes its central events (mode ``private``'s round event, or central DP
without adaptive clipping) at the study's ``privacy.dp.delta`` with its accountant. A site's
own DP-SGD spend is guarded by the site against its policy's cap, not here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.privacy.budget import guard_study_round
from fedcare.privacy.study import central_noise_multiplier
from fedcare.privacy.summary import history_events

if TYPE_CHECKING:
    from fedcare.records.study import StudyConfig

__all__ = ["guard_next_round", "planned_round_events"]


def planned_round_events(study: StudyConfig) -> list[DpEvent]:
    """The study-level DP events one more round will add (empty: nothing to guard).

    Mode ``private``: one Gaussian mechanism of the study's multiplier (as
    :func:`fedcare.strategy.private.private_round_event`); central DP with fixed clipping: the
    same; adaptive clipping's events depend on the round and are not planned.
    """
    dp = study.privacy.dp
    if dp is None or not dp.central:
        return []
    if study.privacy.mode == "private" or dp.adaptive is None:
        return [DpEvent(central_noise_multiplier(dp, study.rounds))]
    return []


def guard_next_round(
    study_id: str, study: StudyConfig, history: Sequence[Mapping[str, Any]], round: int
) -> float | None:
    """Refuse to start ``round`` if it would bring the study's epsilon above its budget.

    ``history`` is the records of the completed rounds (1 .. round-1). Returns the epsilon the
    study will have spent after ``round`` (None when the study declares no budget or no DP).

    Raises
    ------
    PrivacyBudgetError
        Naming the study, the round, the epsilon it would reach and ``privacy.epsilon``.
    """
    budget, dp = study.privacy.epsilon, study.privacy.dp
    planned = planned_round_events(study)
    if budget is None or dp is None or not planned:
        return None
    central, _ = history_events([h for h in history if h.get("round", 0) >= 1])
    spent = [e for events in central for e in events]
    check = guard_study_round(
        f"{study.name} ({study_id})",
        round,
        budget,
        spent,
        planned,
        delta=dp.delta,
        method=dp.accountant,
    )
    return check.after
