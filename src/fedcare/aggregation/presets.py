"""Aggregation stacks as a study file writes them, and the stack they build.

A study's ``aggregation:`` list names layers outermost first, e.g.::

    aggregation:
      - {name: norm_bound, max_norm: 5.0}
      - {name: trimmed_mean, trim: 0.25}

``norm_bound`` and ``krum`` wrap what follows them; ``mean``, ``median`` and ``trimmed_mean``
combine contributions themselves and so may only come last (a sample-weighted ``mean`` is
added when the list ends with a wrapping layer). :func:`build_aggregator` always puts
:class:`~fedcare.aggregation.validate.ValidateUpdates` outermost, so a NaN, infinite or wrongly
shaped update, or one of another dtype than the parameters', is rejected, naming its site,
before any robust layer sees it; a study without an ``aggregation:`` entry gets
``build_aggregator([])`` (validation around a sample-weighted mean), so validation is never
off (:func:`fedcare.strategy.driver.study_strategy`). The specs are plain data in
:mod:`fedcare.records.aggregation_spec` (re-exported here), so a study file with an unknown
layer or a bad option fails on load with the field's path (``aggregation.1.trimmed_mean.trim``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedcare.aggregation.base import Aggregator
from fedcare.aggregation.krum import MultiKrum
from fedcare.aggregation.mean import WeightedMean
from fedcare.aggregation.median import CoordinateMedian
from fedcare.aggregation.norm_bound import NormBound
from fedcare.aggregation.trimmed_mean import TrimmedMean
from fedcare.aggregation.validate import DEFAULT_OUTLIER_RATIO, ValidateUpdates
from fedcare.records.aggregation_spec import TERMINAL_LAYERS as _TERMINAL
from fedcare.records.aggregation_spec import (
    AggregationSpec,
    KrumSpec,
    LayerSpec,
    MeanSpec,
    MedianSpec,
    NormBoundSpec,
    TrimmedMeanSpec,
)
from fedcare.records.aggregation_spec import terminal_last as _terminal_last

__all__ = [
    "AggregationSpec",
    "KrumSpec",
    "LayerSpec",
    "MeanSpec",
    "MedianSpec",
    "NormBoundSpec",
    "TrimmedMeanSpec",
    "build_aggregator",
    "needs_each_update",
]


def _layer(spec: Any, inner: Aggregator[Any] | None) -> Aggregator[Any]:
    options = spec.model_dump(exclude={"name"}, exclude_none=True)
    if isinstance(spec, NormBoundSpec):
        assert inner is not None
        return NormBound(inner, **options)
    if isinstance(spec, KrumSpec):
        return MultiKrum(inner, **options)
    if isinstance(spec, MedianSpec):
        return CoordinateMedian(**options)
    if isinstance(spec, TrimmedMeanSpec):
        return TrimmedMean(**options)
    return WeightedMean(**options)


def needs_each_update(layers: Sequence[Any]) -> list[str]:
    """Names of the layers that need every site's update, so cannot run under secure sum.

    ``norm_bound`` and a plain ``mean`` work on the masked sum: the site clips before masking.
    """
    return [layer.name for layer in layers if layer.name not in ("norm_bound", "mean")]


def build_aggregator(layers: Sequence[Any]) -> Aggregator[Any]:
    """``ValidateUpdates`` around the stack ``layers`` names (outermost first).

    An empty list gives the default: validation around a sample-weighted mean. Validation
    screens out a single update of outlying norm (:data:`DEFAULT_OUTLIER_RATIO`).
    """
    checked = _terminal_last(list(layers))
    agg: Aggregator[Any] | None = None
    if not checked or checked[-1].name not in _TERMINAL:
        agg = WeightedMean()
    for spec in reversed(checked):
        agg = _layer(spec, agg)
    assert agg is not None
    return ValidateUpdates(agg, outlier_ratio=DEFAULT_OUTLIER_RATIO)
