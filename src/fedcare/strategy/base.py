"""The strategy interface: who takes part in a round, what they do, how results combine.

A strategy has four hooks (as in Flower): ``configure_fit`` and ``aggregate_fit`` for
training, ``configure_evaluate`` and ``aggregate_evaluate`` for evaluation. It never touches a
network: the round loop (:mod:`fedcare.strategy.loop`) turns its instructions into tasks and
hands it the replies. How contributions combine is the aggregator's job (a composable layer
stack, :mod:`fedcare.aggregation`), not the strategy's.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedcare.aggregation.base import Measurements
from fedcare.errors import ConfigError, RoundFailedError
from fedcare.evaluation.summary import summarize_sites
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Scalar

__all__ = ["Instruction", "Strategy", "StrategyState", "sample_sites"]


@dataclass(frozen=True)
class StrategyState:
    """Everything the server carries from one round to the next."""

    params: ArrayRecord
    aggregator: Any = None
    optimizer: Any = None
    arrays: Mapping[str, ArrayRecord] = field(default_factory=dict)
    meta: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class Instruction:
    """What one site should do this round, beyond the global params every task carries."""

    site_id: str
    config: Mapping[str, Scalar] = field(default_factory=dict)
    arrays: Mapping[str, ArrayRecord] = field(default_factory=dict)


def sample_sites(
    sites: Sequence[str], *, fraction: float, min_sites: int, rng: np.random.Generator, round: int
) -> list[str]:
    """Pick ``max(min_sites, ceil(fraction * len(sites)))`` sites at random, sorted.

    Raises
    ------
    RoundFailedError
        If fewer than ``min_sites`` sites are available.
    """
    available = sorted(sites)
    if len(available) < min_sites:
        raise RoundFailedError(
            f"round {round}: {len(available)} sites available {available}, "
            f"min_sites is {min_sites}",
            round=round,
            replied=0,
            required=min_sites,
        )
    k = min(len(available), max(min_sites, math.ceil(fraction * len(available))))
    if k == len(available):
        return available
    chosen = rng.choice(len(available), size=k, replace=False)
    return sorted(available[i] for i in chosen)


class Strategy(ABC):
    """Base class of the federated strategies.

    Parameters
    ----------
    train:
        Local training settings sent to every site (``epochs``, ``lr``, ``batch_size``,
        ``optimizer``, ``momentum``, ``l2``, ``max_steps``).
    fraction:
        Fraction of available sites sampled for training each round.
    min_sites:
        Fewest sites sampled, and fewest usable replies for a round to count.
    """

    #: Name used in study files and results.
    name: ClassVar[str]

    def __init__(
        self,
        *,
        train: Mapping[str, Scalar] | None = None,
        fraction: float = 1.0,
        min_sites: int = 1,
    ) -> None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {fraction!r}")
        if min_sites < 1:
            raise ConfigError(f"min_sites must be >= 1, got {min_sites!r}")
        self.train: dict[str, Scalar] = dict(train or {})
        self.fraction = fraction
        self.min_sites = min_sites

    @abstractmethod
    def init_state(self, params: ArrayRecord) -> StrategyState:
        """The server state before round 1.

        Parameters
        ----------
        params:
            The initial global parameters.

        Returns
        -------
        StrategyState
            Params plus aggregator and optimizer state.
        """

    @abstractmethod
    def configure_fit(
        self, round: int, state: StrategyState, sites: Sequence[str], rng: np.random.Generator
    ) -> list[Instruction]:
        """Choose the round's sites and say what each should do.

        Parameters
        ----------
        round:
            The round number (from 1).
        state:
            The current server state.
        sites:
            Sites available now.
        rng:
            Randomness for sampling (seeded per round by the loop).

        Returns
        -------
        list of Instruction
            One per chosen site.
        """

    @abstractmethod
    def aggregate_fit(
        self, round: int, state: StrategyState, replies: Iterable[Reply], *, num_available: int
    ) -> tuple[StrategyState, Measurements]:
        """Combine the round's successful fit replies into the next state.

        Parameters
        ----------
        round:
            The round number.
        state:
            The state the round started from (never mutated).
        replies:
            Successful replies, consumed once as they stream in.
        num_available:
            How many sites were available when the round was configured.

        Returns
        -------
        tuple
            ``(new_state, measurements)``; measurements include ``num_contributions``.

        Raises
        ------
        AggregationError
            If no usable reply arrived.
        """

    def configure_evaluate(
        self, round: int, state: StrategyState, sites: Sequence[str], rng: np.random.Generator
    ) -> list[Instruction]:
        """Evaluate the global model on every available site's test split."""
        return [Instruction(site_id=s) for s in sorted(sites)]

    def aggregate_evaluate(self, round: int, replies: Iterable[Reply]) -> dict[str, Any]:
        """Per-site metrics plus their weighted (by test rows) and unweighted means."""
        per_site = dict(sorted((r.site_id, dict(r.metrics)) for r in replies))
        return {"per_site": per_site, **summarize_sites(per_site)}
