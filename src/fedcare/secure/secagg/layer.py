"""The secure-sum aggregation layer: the coordinator only ever sees the sum over sites.

:class:`SecureSum` is the outermost layer of a pipeline. It exposes a sans-I/O ``protocol``
(:class:`SecAggServer`) that the round loop drives stage by stage through the grid; what
reaches ``update`` is then a single contribution, the unmasked weighted mean, which the inner
aggregator (validation, mean) handles as usual. Its :meth:`site_spec` tells each site to mask
its weighted update (``[w * delta, w]``) instead of sending it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.errors import ConfigError
from fedcare.records.arrays import ArrayRecord
from fedcare.secure.secagg.quantize import QuantSpec
from fedcare.secure.secagg.server import SecAggServer

__all__ = ["PROTOCOL", "SPEC_VERSION", "SecureSum", "with_secure_sum"]

SPEC_VERSION = 1
#: What :meth:`SecureSum.multistage` names: the round loop runs the secure-sum stages.
PROTOCOL = "secure_sum"


class SecureSum(Aggregator[Any]):
    """Secure aggregation (SecAgg+) around ``inner``.

    Parameters
    ----------
    inner:
        Receives the unmasked weighted mean as one contribution.
    quant:
        Fixed-point encoding of each coordinate of ``[w * delta, w]``.
    degree, threshold:
        Neighbour-graph degree and share threshold (defaults: see :mod:`.graph`).
    """

    def __init__(
        self,
        inner: Aggregator[Any],
        *,
        quant: QuantSpec | None = None,
        degree: int | None = None,
        threshold: int | None = None,
    ) -> None:
        self.inner = inner
        self.quant = quant or QuantSpec()
        self.degree, self.threshold = degree, threshold
        self.protocol = SecAggServer(self.quant, degree=degree, threshold=threshold)

    def init(self, template: ArrayRecord) -> Any:
        return self.inner.init(template)

    def update(
        self, state: Any, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, Any, Measurements]:
        return self.inner.update(state, contributions)

    def site_spec(self) -> Mapping[str, Any]:
        spec: dict[str, Any] = {
            "version": SPEC_VERSION,
            "clip": self.quant.clip,
            "bits": self.quant.bits,
        }
        chosen = {"neighbours": self.degree, "threshold": self.threshold}  # as the plan has them
        spec |= {k: v for k, v in chosen.items() if v is not None}
        return {**self.inner.site_spec(), "secagg": spec}

    def multistage(self) -> str:
        return PROTOCOL


def with_secure_sum(strategy: Any, options: Mapping[str, Any]) -> Any:
    """A copy of ``strategy`` whose aggregator is wrapped in :class:`SecureSum`.

    ``options`` may set ``clip``, ``bits``, ``degree`` and ``threshold``.

    Raises
    ------
    ConfigError
        If the strategy has no aggregator to wrap or an option is unknown.
    """
    unknown = sorted(set(options) - {"clip", "bits", "degree", "threshold"})
    if unknown:
        raise ConfigError(f"secure_aggregation has no option(s) {unknown}")
    if (
        not isinstance(getattr(strategy, "aggregator", None), Aggregator)
        or not hasattr(strategy, "aggregation_template")
        or getattr(strategy, "algorithm", None) == "scaffold"
    ):
        raise ConfigError(f"strategy {strategy.name!r} does not support secure aggregation")
    quant = QuantSpec(**{k: options[k] for k in ("clip", "bits") if k in options})
    out = copy.copy(strategy)
    out.aggregator = SecureSum(
        strategy.aggregator,
        quant=quant,
        degree=options.get("degree"),
        threshold=options.get("threshold"),
    )
    return out
