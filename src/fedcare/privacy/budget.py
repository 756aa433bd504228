"""Privacy budgets: epsilon of a ledger's DP events and the guards that refuse an overspend.

Pure functions; the site's ledger (:mod:`fedcare.site.ledger`) and the coordinator's mirror
ledger (:mod:`fedcare.coordinator.store_ledger`) hold the state.

**How spends compose.** A ledger keeps DP *events*, not epsilon numbers: the epsilon spent on
a dataset is that of ALL its events (every round of every study) composed by one RDP
accountant at one delta (:data:`LEDGER_DELTA`, :data:`LEDGER_METHOD`), which is tighter than
adding per-study epsilons (basic composition) and still valid. Both ledgers use these same
constants, so their numbers agree. The events of privacy mode ``private`` are user-level (a
site's whole data); DP-SGD events are sample-level (one row); composing both in one accountant
bounds the epsilon of any one patient's row, conservatively.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedcare.errors import PrivacyBudgetError
from fedcare.privacy.accounting.accountant import Accountant
from fedcare.privacy.accounting.analysis import DpEvent

__all__ = [
    "LEDGER_DELTA",
    "LEDGER_METHOD",
    "BudgetCheck",
    "check_budget",
    "guard_study_round",
    "ledger_epsilon",
]

#: The delta at which ledgers report epsilon (a site's cap is an epsilon at this delta).
LEDGER_DELTA = 1e-5
#: The accountant that composes a ledger's events.
LEDGER_METHOD = "rdp"
#: Relative slack for float noise: a calibrated ``target_epsilon`` lands on the budget exactly.
_SLACK = 1e-6

Event = DpEvent | Mapping[str, Any]


def ledger_epsilon(
    events: Iterable[Event], *, delta: float = LEDGER_DELTA, method: str = LEDGER_METHOD
) -> float:
    """Epsilon of ``events`` composed (0.0 for none)."""
    return Accountant(method).record_all(events).epsilon(delta)


@dataclass(frozen=True)
class BudgetCheck:
    """Epsilon before and after a planned spend, against a cap (None: no cap)."""

    spent: float
    after: float
    cap: float | None

    @property
    def ok(self) -> bool:
        return self.cap is None or self.after <= self.cap * (1 + _SLACK)

    @property
    def remaining(self) -> float | None:
        return None if self.cap is None else max(0.0, self.cap - self.spent)


def check_budget(
    spent: Sequence[Event], planned: Sequence[Event], cap: float | None, **kw: Any
) -> BudgetCheck:
    """Whether spending ``planned`` on top of ``spent`` stays within ``cap``."""
    before = ledger_epsilon(spent, **kw)
    after = ledger_epsilon([*spent, *planned], **kw) if planned else before
    return BudgetCheck(before, after, cap)


def guard_study_round(
    study: str,
    round: int,
    budget: float | None,
    spent: Sequence[Event],
    planned: Sequence[Event],
    *,
    delta: float,
    method: str,
) -> BudgetCheck:
    """The coordinator's guard: refuse to start ``round`` if it would overspend ``budget``.

    Raises
    ------
    PrivacyBudgetError
        Naming the study, the round, the epsilon it would reach and the budget.
    """
    check = check_budget(spent, planned, budget, delta=delta, method=method)
    if not check.ok:
        raise PrivacyBudgetError(
            f"study {study!r}: round {round} would bring epsilon to {check.after:.3g} "
            f"(privacy.epsilon {budget:g}; spent {check.spent:.3g} in {round - 1} rounds, "
            f"delta {delta:g}); the round was not started"
        )
    return check
