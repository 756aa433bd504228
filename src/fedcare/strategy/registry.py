"""Build a strategy from its name and options (as a study file gives them)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from fedcare.errors import ConfigError
from fedcare.strategy.base import Strategy
from fedcare.strategy.fedbuff import FedBuff
from fedcare.strategy.fedopt import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi
from fedcare.strategy.scaffold import Scaffold

__all__ = ["STRATEGIES", "build_strategy"]

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad, Scaffold, FedBuff)
}


def _options_of(cls: type[Strategy]) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()  # type: ignore[misc]
        names |= {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    return names - {"optimizer", "aggregator", "prox_mu"}


def build_strategy(name: str, options: Mapping[str, Any] | None = None, **common: Any) -> Strategy:
    """Instantiate the strategy ``name`` with ``options`` plus ``common`` (train, fraction, ...).

    Raises
    ------
    ConfigError
        For an unknown strategy or an option it does not take, naming both.
    """
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    options = dict(options or {})
    allowed = _options_of(cls)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"strategy {name!r} has no option(s) {unknown}; its options are {sorted(allowed)}"
        )
    try:
        return cls(**options, **common)
    except TypeError as err:
        raise ConfigError(f"strategy {name!r}: {err}") from err
