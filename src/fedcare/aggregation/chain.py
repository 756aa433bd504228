"""Compose aggregation layers around an inner aggregator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedcare.aggregation.base import Aggregator

__all__ = ["Layer", "chain"]

Layer = Callable[[Aggregator[Any]], Aggregator[Any]]


def chain(*layers: Layer, inner: Aggregator[Any]) -> Aggregator[Any]:
    """Wrap ``inner`` in ``layers``; the first layer is the outermost (sees contributions first).

    ``chain(ValidateUpdates, partial(ClipNorm, bound=1.0), inner=WeightedMean())`` builds
    ``ValidateUpdates(ClipNorm(WeightedMean(), bound=1.0))``.
    """
    agg = inner
    for layer in reversed(layers):
        agg = layer(agg)
    return agg
