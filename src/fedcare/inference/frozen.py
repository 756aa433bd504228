"""Frozen preprocessing: mean imputation and z-scoring with fixed statistics.

The arithmetic is the site's training-time :class:`fedcare.site.preprocess.Preprocessor`
(a test checks they agree): missing values (``NaN``) become the feature's mean when the plan
imputes, then ``(x - mean) / std`` when it scales, where a feature whose standard deviation is
zero or not finite is divided by 1. A feature's mean that no site could report (``NaN``) is 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedcare.errors import ValidationError

__all__ = ["FrozenPreprocessing", "statistics_of_rows"]


def statistics_of_rows(X: np.ndarray) -> dict[str, np.ndarray]:
    """``{"mean", "std"}`` of training rows ``X`` (``NaN`` ignored), as a site computes its
    local statistics; an all-missing feature gets mean 0."""
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValidationError(f"statistics need 2-D rows (n, features), got shape {arr.shape}")
    with warnings.catch_warnings():  # an all-missing column gives NaN, handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(arr, axis=0)
        std = np.nanstd(arr, axis=0)
    return {"mean": np.where(np.isnan(mean), 0.0, mean), "std": std}


@dataclass(frozen=True)
class FrozenPreprocessing:
    """Fixed statistics applied to every row; ``mean``/``std`` are ``None`` when the plan
    neither imputes nor scales."""

    impute: bool
    scale: bool
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @classmethod
    def from_statistics(
        cls, impute: bool, scale: bool, stats: Mapping[str, np.ndarray] | None, width: int
    ) -> FrozenPreprocessing:
        """Check ``stats`` (``mean`` and ``std`` of ``width`` features) and freeze them.

        Raises
        ------
        ValidationError
            If the plan imputes or scales but ``stats`` are missing or of the wrong shape.
        """
        if not (impute or scale):
            return cls(False, False)
        if stats is None or "mean" not in stats or "std" not in stats:
            raise ValidationError(
                "the model imputes or scales its inputs but carries no frozen statistics "
                "(mean, std)"
            )
        mean = np.asarray(stats["mean"], dtype=np.float64)
        std = np.asarray(stats["std"], dtype=np.float64)
        for name, value in (("mean", mean), ("std", std)):
            if value.shape != (width,):
                raise ValidationError(
                    f"frozen statistic {name!r} has shape {value.shape}, expected ({width},)"
                )
        return cls(impute, scale, np.where(np.isnan(mean), 0.0, mean), std)

    @property
    def divisor(self) -> np.ndarray | None:
        """The standard deviations actually divided by (1 where zero or not finite)."""
        if self.std is None:
            return None
        return np.where(np.isfinite(self.std) & (self.std > 0), self.std, 1.0)

    def apply(self, X: np.ndarray) -> np.ndarray:
        """``X`` (raw rows) imputed and scaled, as float64 (a new array)."""
        out = np.array(X, dtype=np.float64)
        if self.mean is None:
            return out
        if self.impute:
            missing = np.isnan(out)
            if missing.any():
                out = np.where(missing, self.mean, out)
        divisor = self.divisor
        if self.scale and divisor is not None:
            out -= self.mean
            out /= divisor
        return out
