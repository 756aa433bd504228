"""A layer that drops malformed contributions and names the sites that sent them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord

__all__ = ["ValidateState", "ValidateUpdates"]


@dataclass(frozen=True)
class ValidateState:
    template: ArrayRecord
    inner: Any


class ValidateUpdates(Aggregator[ValidateState]):
    """Reject contributions with missing, extra or wrongly shaped arrays, a dtype other than the
    template's (an int64 update is refused, not cast), or non-finite values.

    Every study's stack has this layer (:func:`fedcare.strategy.driver.study_strategy` puts it
    in whatever the study file says). The weight of a contribution is checked against the rows
    its site declared by the round loop (:mod:`fedcare.strategy.screening`), which knows them.
    Rejected contributions never reach the inner aggregator. Measurements add
    ``rejected_sites`` (site ids) and ``rejected_reasons`` (site id -> reason), so a reply
    with NaN is visible in the round's record instead of silently poisoning the model.
    Optionally bounds the update norm (``max_norm``) to refuse absurd updates outright.
    """

    def __init__(self, inner: Aggregator[Any], *, max_norm: float | None = None) -> None:
        self.inner = inner
        self.max_norm = max_norm

    def init(self, template: ArrayRecord) -> ValidateState:
        return ValidateState(template=template, inner=self.inner.init(template))

    def _reason(self, template: ArrayRecord, c: Contribution) -> str | None:
        try:
            template.check_structure(c.arrays, what=f"update from site {c.site_id!r}")
        except ValidationError as err:
            return str(err)
        wrong = {k: str(v.dtype) for k, v in c.arrays.items() if v.dtype != template[k].dtype}
        if wrong:
            expected = {k: str(template[k].dtype) for k in wrong}
            return (
                f"update from site {c.site_id!r} has dtypes {wrong}, expected {expected} "
                "(the parameter template's)"
            )
        if not c.arrays.all_finite():
            bad = [k for k, v in c.arrays.items() if not np.isfinite(v).all()]
            return f"update from site {c.site_id!r} has NaN or infinite values in {bad}"
        if self.max_norm is not None and c.arrays.norm() > self.max_norm:
            return (
                f"update from site {c.site_id!r} has L2 norm {c.arrays.norm():.4g}, "
                f"above the bound {self.max_norm:.4g}"
            )
        return None

    def update(
        self, state: ValidateState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, ValidateState, Measurements]:
        rejected: dict[str, str] = {}

        def accepted() -> Iterator[Contribution]:
            for c in contributions:
                reason = self._reason(state.template, c)
                if reason is None:
                    yield c
                else:
                    rejected[c.site_id] = reason

        result, inner_state, measurements = self.inner.update(state.inner, accepted())
        measurements = {  # inner layers (multi-Krum) may have rejected sites too
            **measurements,
            "rejected_sites": sorted({*measurements.get("rejected_sites", []), *rejected}),
            "rejected_reasons": {**measurements.get("rejected_reasons", {}), **rejected},
        }
        return result, ValidateState(state.template, inner_state), measurements

    def site_spec(self) -> Mapping[str, Any]:
        return self.inner.site_spec()
