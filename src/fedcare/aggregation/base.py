"""The aggregator interface: an ``init``/``update`` pair with explicit state.

An aggregator combines the contributions of one round into one result::

    state = agg.init(template)
    result, state, measurements = agg.update(state, contributions)

``contributions`` is any iterable and is consumed once, in order, so an aggregator can run as
replies stream in: memory grows with the model, not with sites × model. (The round loop passes
replies on in site order, so floating-point sums and model hashes do not depend on arrival
order; a reply that arrives early waits until the sites before it answered or failed.) Layers
(validation, clipping, DP noise, secure sum, robust means) wrap an ``inner`` aggregator and
return the same interface; :func:`fedcare.aggregation.chain` composes them. Every aggregator
reports named measurements (numbers or lists of site ids) that reports, the dashboard and the
audit read generically.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord

__all__ = ["Aggregator", "Contribution", "Measurements"]

S = TypeVar("S")
Measurements = dict[str, Any]


@dataclass(frozen=True)
class Contribution:
    """One site's input to an aggregation: named arrays and a non-negative weight."""

    site_id: str
    arrays: ArrayRecord
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.weight >= 0:  # also rejects NaN
            raise ValidationError(
                f"contribution from site {self.site_id!r} has weight {self.weight!r}; "
                "expected a finite number >= 0"
            )


class Aggregator(ABC, Generic[S]):
    """Combines contributions into one :class:`ArrayRecord`."""

    @abstractmethod
    def init(self, template: ArrayRecord) -> S:
        """The initial state for contributions shaped like ``template``.

        Parameters
        ----------
        template:
            An array record with the names, shapes and dtypes every contribution must have.

        Returns
        -------
        S
            The aggregator's state (immutable; a new one is returned by :meth:`update`).
        """

    @abstractmethod
    def update(
        self, state: S, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, S, Measurements]:
        """Aggregate one round's contributions.

        Parameters
        ----------
        state:
            The state from :meth:`init` or the previous :meth:`update`.
        contributions:
            The round's contributions, consumed once and in order.

        Returns
        -------
        tuple
            ``(result, new_state, measurements)``.

        Raises
        ------
        AggregationError
            If no usable contribution arrived.
        """

    def site_spec(self) -> Mapping[str, Any]:
        """The typed, versioned spec of this pipeline's client half, sent with every task.

        Layers with a site half (clipping, quantization, masking, encryption) add their entry;
        a plain aggregator has none.
        """
        return {}

    def multistage(self) -> str | None:
        """The multi-stage protocol the round loop runs for this pipeline, or ``None``.

        A protocol layer (secure sum, encrypted sum) is outermost and names its protocol
        (``"secure_sum"``, ``"encrypted_sum"``); the loop then runs that protocol's stages over
        the grid instead of one ``fit`` exchange. Every other layer has none.
        """
        return None
