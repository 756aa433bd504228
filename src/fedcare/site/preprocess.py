"""Site-side preprocessing of tabular features: mean imputation and z-scoring.

The study's plan says ``{"impute": "mean" | "none", "scale": "none" | "local" | "global"}``.
``local`` uses this site's training rows; ``global`` uses pooled statistics that arrive with
the task (``task.arrays["preprocess"]`` with ``mean`` and ``std``), computed by a federated
statistics round so that no row leaves any site. Image inputs pass through unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ConfigError, ValidationError
from fedcare.records.arrays import ArrayRecord

__all__ = ["LocalStats", "Preprocessor"]

IMPUTE = ("mean", "none")
SCALE = ("none", "local", "global")


class LocalStats:
    """A site's training rows' column means (NaN-free) and standard deviations, computed once.

    The statistics depend on the rows only, and every task of a study asks for them again: a
    site keeps one of these (for the same ``Dataset`` object it returns the arrays it computed
    before, read-only).
    """

    def __init__(self) -> None:
        self._of: tuple[Dataset, np.ndarray, np.ndarray] | None = None

    def __call__(self, train: Dataset) -> tuple[np.ndarray, np.ndarray]:
        if self._of is None or self._of[0] is not train:
            with warnings.catch_warnings():  # an all-missing column gives NaN, handled below
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(train.X, axis=0)
                std = np.nanstd(train.X, axis=0)
            mean = np.where(np.isnan(mean), 0.0, mean)
            mean.flags.writeable = std.flags.writeable = False
            self._of = (train, mean, std)
        return self._of[1], self._of[2]


@dataclass(frozen=True)
class Preprocessor:
    """Fixed statistics (or none) applied identically to train and test rows."""

    mean: np.ndarray | None
    std: np.ndarray | None
    impute: bool
    scale: bool

    @classmethod
    def for_task(
        cls,
        spec: Mapping[str, Any],
        arrays: Mapping[str, ArrayRecord],
        train: Dataset,
        *,
        stats: LocalStats | None = None,
    ) -> Preprocessor:
        """The preprocessing of a task's ``spec`` for rows like ``train``'s; ``stats`` keeps
        the local statistics of ``train`` between tasks (computed again without it)."""
        impute, scale = spec.get("impute", "none"), spec.get("scale", "none")
        if impute not in IMPUTE or scale not in SCALE:
            raise ConfigError(
                f"preprocessing impute={impute!r} scale={scale!r}; "
                f"impute must be one of {IMPUTE}, scale one of {SCALE}"
            )
        if train.X.ndim != 2:
            return cls(None, None, impute=False, scale=False)
        if scale == "global":
            pooled = arrays.get("preprocess")
            if pooled is None or "mean" not in pooled or "std" not in pooled:
                raise ValidationError(
                    "the plan asks for global scaling but the task carries no "
                    "'preprocess' statistics (mean, std)"
                )
            mean, std = np.asarray(pooled["mean"]), np.asarray(pooled["std"])
            mean = np.where(np.isnan(mean), 0.0, mean)  # a feature no site could report
            if mean.shape != train.X.shape[1:]:
                raise ValidationError(
                    f"global statistics have shape {mean.shape}, features {train.X.shape[1:]}"
                )
        else:
            mean, std = (LocalStats() if stats is None else stats)(train)
        return cls(mean, std, impute=impute == "mean", scale=scale != "none")

    def apply(self, data: Dataset) -> Dataset:
        """The rows with missing values imputed and features standardized."""
        if self.mean is None or self.std is None:
            return data
        X = np.asarray(data.X, dtype=np.float64)
        if self.impute:
            X = np.where(np.isnan(X), self.mean, X)
        if self.scale:
            safe = np.where(np.isfinite(self.std) & (self.std > 0), self.std, 1.0)
            X = (X - self.mean) / safe
        return data.with_features(X)
