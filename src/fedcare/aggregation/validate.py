"""A layer that drops malformed contributions and names the sites that sent them.

Bounded memory: the finiteness check and the L2 norms walk each array in blocks
(:mod:`fedcare.aggregation.blockwise`), with temporaries of one block, releasing a memory-mapped
reply's pages as they go; the update held back by the outlier screening is held by reference
only. One pass per update: when a norm is needed (``max_norm``, ``outlier_ratio``) its float64
sum of squares is also the finiteness check (finite only if every element is), the widened
block is one buffer reused for every update of the round, and the outlier screening reuses the
norm taken here. Norms are summed in float64 (more accurate than a float32 dot product, and
not bitwise the same as :meth:`fedcare.records.arrays.ArrayRecord.norm`: a decision exactly at
the bound could differ in the last bit).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.aggregation.blockwise import Scratch, all_finite, sq_norm
from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord

__all__ = ["DEFAULT_OUTLIER_RATIO", "ValidateState", "ValidateUpdates", "shape_problem"]

#: The default stacks (no DP layer) reject an update whose L2 norm is more than this many times
#: the largest of the round's other updates. Honest sites differ by far less (site sizes and
#: data differ by at most tens); a scaled or runaway update is caught before it moves the model.
DEFAULT_OUTLIER_RATIO = 100.0


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

    ``outlier_ratio``: hold back the largest-norm update while the others stream on (one extra
    update referenced: in memory if it arrived in memory; a memory-mapped one's pages are
    released once its norm is taken), and at the end reject it when its norm is more than
    ``outlier_ratio`` times the largest of the others' (a single site cannot scale the model
    away); with one update there is nothing to compare and it passes. Not for stacks with DP
    layers: which update is dropped would depend on the other sites' data, outside the DP
    analysis.
    """

    def __init__(
        self,
        inner: Aggregator[Any],
        *,
        max_norm: float | None = None,
        outlier_ratio: float | None = None,
    ) -> None:
        if outlier_ratio is not None and not outlier_ratio > 1:
            raise ValidationError(f"outlier_ratio must be > 1 or None, got {outlier_ratio!r}")
        self.inner = inner
        self.max_norm = max_norm
        self.outlier_ratio = outlier_ratio

    def init(self, template: ArrayRecord) -> ValidateState:
        return ValidateState(template=template, inner=self.inner.init(template))

    def _reason(
        self, template: ArrayRecord, c: Contribution, scratch: Scratch
    ) -> tuple[str | None, float]:
        """Why ``c`` is refused (or ``None``), and its L2 norm when a bound needs it (else 0).

        The norm and the finiteness check share one pass: a finite float64 sum of squares
        implies finite elements, so an array is checked on its own (:func:`all_finite`) only
        when its sum is not finite, which also tells an overflow from a NaN.
        """
        wrong = shape_problem(template, c.site_id, c.arrays)
        if wrong is not None:
            return wrong, 0.0
        needs_norm = self.max_norm is not None or self.outlier_ratio is not None
        squares = {k: sq_norm(v, scratch) for k, v in c.arrays.items()} if needs_norm else {}
        bad = [
            k
            for k, v in c.arrays.items()
            if not (k in squares and math.isfinite(squares[k])) and not all_finite(v)
        ]
        if bad:
            return f"update from site {c.site_id!r} has NaN or infinite values in {bad}", 0.0
        size = float(np.sqrt(sum(squares.values()))) if needs_norm else 0.0  # = norm(arrays)
        if self.max_norm is not None and size > self.max_norm:
            return (
                f"update from site {c.site_id!r} has L2 norm {size:.4g}, "
                f"above the bound {self.max_norm:.4g}"
            ), size
        return None, size

    def update(
        self, state: ValidateState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, ValidateState, Measurements]:
        rejected: dict[str, str] = {}
        scratch: Scratch = {}  # one float64 block, reused by every contribution's norm

        def valid() -> Iterator[tuple[Contribution, float]]:
            for c in contributions:
                reason, size = self._reason(state.template, c, scratch)
                if reason is None:
                    yield c, size
                else:
                    rejected[c.site_id] = reason
                del c  # not held while the next one is awaited

        accepted = (
            _unpaired(valid()) if self.outlier_ratio is None else self._screened(valid(), rejected)
        )
        result, inner_state, measurements = self.inner.update(state.inner, accepted)
        measurements = {  # inner layers (multi-Krum) may have rejected sites too
            **measurements,
            "rejected_sites": sorted({*measurements.get("rejected_sites", []), *rejected}),
            "rejected_reasons": {**measurements.get("rejected_reasons", {}), **rejected},
        }
        return result, ValidateState(state.template, inner_state), measurements

    def _screened(
        self, contributions: Iterator[tuple[Contribution, float]], rejected: dict[str, str]
    ) -> Iterator[Contribution]:
        """Pass contributions on, holding back the largest-norm one to judge it last (each
        comes with its norm, taken by :meth:`_reason`)."""
        assert self.outlier_ratio is not None
        held: Contribution | None = None
        held_norm, others = 0.0, 0.0
        for c, size in contributions:
            if held is None or size > held_norm:
                if held is not None:
                    others = max(others, held_norm)
                    yield held
                held, held_norm = c, size
            else:
                others = max(others, size)
                yield c
            del c
        if held is None:
            return
        if others > 0 and held_norm > self.outlier_ratio * others:
            rejected[held.site_id] = (
                f"update from site {held.site_id!r} has L2 norm {held_norm:.4g}, more than "
                f"{self.outlier_ratio:g} times the largest other update's ({others:.4g})"
            )
            return
        yield held

    def site_spec(self) -> Mapping[str, Any]:
        return self.inner.site_spec()


def shape_problem(template: ArrayRecord, site_id: str, arrays: ArrayRecord) -> str | None:
    """Why ``arrays`` (an update from ``site_id``) do not fit ``template``: missing, extra or
    wrongly shaped arrays, or a dtype other than the template's (refused, not cast); else
    ``None``."""
    try:
        template.check_structure(arrays, what=f"update from site {site_id!r}")
    except ValidationError as err:
        return str(err)
    wrong = {k: str(v.dtype) for k, v in arrays.items() if v.dtype != template[k].dtype}
    if not wrong:
        return None
    expected = {k: str(template[k].dtype) for k in wrong}
    return (
        f"update from site {site_id!r} has dtypes {wrong}, expected {expected} "
        "(the parameter template's)"
    )


def _unpaired(pairs: Iterator[tuple[Contribution, float]]) -> Iterator[Contribution]:
    """The contributions of ``(contribution, norm)`` pairs."""
    for c, _ in pairs:
        yield c
        del c  # not held while the next one is awaited
