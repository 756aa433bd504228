"""Accountants by name: the methods an :class:`Accountant` (and a study file) can name.

A leaf of the accounting package: :mod:`~fedcare.privacy.accounting.accountant` imports it,
never the other way (so ``create_accountant`` lives there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fedcare.errors import ConfigError
from fedcare.privacy.accounting.analysis import DpEvent, pld_epsilon, rdp_epsilon

__all__ = ["ACCOUNTANTS", "accountant_names", "epsilon_of"]

EpsilonFn = Callable[[Iterable[DpEvent], float], float]


def _opacus_rdp(events: Iterable[DpEvent], delta: float) -> float:
    from fedcare.privacy.torch import opacus_rdp_epsilon  # imports Opacus only when asked

    return opacus_rdp_epsilon(events, delta)


#: ``name -> epsilon(events, delta)``: dp-accounting's RDP and PLD, Opacus's RDP.
ACCOUNTANTS: dict[str, EpsilonFn] = {
    "rdp": rdp_epsilon,
    "pld": pld_epsilon,
    "opacus-rdp": _opacus_rdp,
}


def accountant_names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(ACCOUNTANTS)


def epsilon_of(events: Iterable[DpEvent], delta: float, *, method: str = "rdp") -> float:
    """Epsilon of ``events`` at ``delta`` by the accountant registered as ``method``.

    Raises
    ------
    ConfigError
        For an unknown method (naming it and the known ones).
    """
    fn = ACCOUNTANTS.get(method)
    if fn is None:
        raise ConfigError(f"unknown accountant {method!r}; choose one of {accountant_names()}")
    return fn(list(events), delta)
