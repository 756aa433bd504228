"""Calibration of predicted probabilities and values, from rows or from binned counts (pure
numpy).

Bins are equal-width on ``[0, 1]`` with scikit-learn's rule
(``sklearn.calibration.calibration_curve(strategy="uniform")``):
``edges = linspace(0, 1, k + 1)``, ``index = searchsorted(edges[1:-1], p)``, so a bin is
``(lo, hi]`` except the first, ``[0, hi]``. A reliability bin is
``{"lo", "hi", "n", "pos", "sum_p"}`` (rows, positives, sum of predicted probabilities); bins of
several sites add up, and the calibration curve, Brier score and expected calibration error of
the pooled rows follow from the sums exactly (:func:`curve_from_bins`, :func:`ece_from_bins`).

The logistic recalibration (:func:`logistic_recalibration`) fits
``logit P(y = 1) = intercept + slope * logit(p)`` by Newton's method; a well-calibrated model
has slope 1 and intercept 0 (Cox 1958; Van Calster et al. 2016's "weak calibration").
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

__all__ = [
    "LOGIT_CLIP",
    "bin_index",
    "curve_from_bins",
    "ece_from_bins",
    "linear_recalibration",
    "logistic_recalibration",
    "reliability_bins",
]

#: Probabilities are clipped to ``[LOGIT_CLIP, 1 - LOGIT_CLIP]`` before ``logit``.
LOGIT_CLIP = 1e-6

_NEWTON_STEPS = 50
_NEWTON_TOL = 1e-10
_MAX_COEF = 1e3


def bin_index(p: np.ndarray, k: int) -> np.ndarray:
    """The bin (``0 .. k-1``) of each probability, scikit-learn's uniform rule."""
    edges = np.linspace(0.0, 1.0, k + 1)
    return np.searchsorted(edges[1:-1], p)


def reliability_bins(y: np.ndarray, p: np.ndarray, k: int) -> list[dict[str, Any]]:
    """All ``k`` reliability bins of labels ``y`` (0/1) and probabilities ``p`` (empty bins have
    ``n`` 0)."""
    edges = np.linspace(0.0, 1.0, k + 1)
    idx = bin_index(p, k)
    n = np.bincount(idx, minlength=k)
    pos = np.bincount(idx[y == 1], minlength=k)
    sum_p = np.bincount(idx, weights=p, minlength=k)
    return [
        {
            "lo": float(edges[i]),
            "hi": float(edges[i + 1]),
            "n": int(n[i]),
            "pos": int(pos[i]),
            "sum_p": float(sum_p[i]),
        }
        for i in range(k)
    ]


def ece_from_bins(bins: list[dict[str, Any]]) -> float | None:
    """Expected calibration error ``sum_b n_b / N * |pos_b / n_b - mean p_b|`` (``None`` with no
    row)."""
    total = sum(int(b["n"]) for b in bins)
    if total == 0:
        return None
    return float(sum(abs(b["pos"] - b["sum_p"]) for b in bins) / total)


def curve_from_bins(bins: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The reliability curve, empty bins dropped: ``{"prob_true", "prob_pred", "n"}`` equal to
    ``calibration_curve(y, p, n_bins=len(bins), strategy="uniform")`` on the rows."""
    kept = [b for b in bins if b["n"] > 0]
    return {
        "prob_true": [b["pos"] / b["n"] for b in kept],
        "prob_pred": [b["sum_p"] / b["n"] for b in kept],
        "n": [int(b["n"]) for b in kept],
    }


def _none_fit() -> dict[str, float | None]:
    return {"slope": None, "slope_se": None, "intercept": None, "intercept_se": None}


def logistic_recalibration(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """Calibration slope and intercept with standard errors: the logistic regression of ``y`` on
    ``logit(clip(p))``, fitted by Newton's method from ``(intercept 0, slope 1)``.

    Returns ``{"slope", "slope_se", "intercept", "intercept_se"}``, all ``None`` when the fit is
    not estimable: fewer than 3 rows, one class only, constant ``logit(p)``, or (quasi-)complete
    separation (Newton does not converge, or a coefficient passes 1000).
    """
    pos = (y == 1).astype(float)
    if p.size < 3 or pos.min() == pos.max():
        return _none_fit()
    q = np.clip(p, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    x = np.log(q) - np.log1p(-q)
    if np.ptp(x) == 0.0:
        return _none_fit()
    design = np.stack([np.ones_like(x), x], axis=1)
    beta = np.array([0.0, 1.0])
    for _ in range(_NEWTON_STEPS):
        mu = expit(design @ beta)
        info = design.T @ (design * (mu * (1.0 - mu))[:, None])
        try:
            step = np.linalg.solve(info, design.T @ (pos - mu))
        except np.linalg.LinAlgError:
            return _none_fit()
        beta = beta + step
        if not np.all(np.isfinite(beta)) or np.max(np.abs(beta)) > _MAX_COEF:
            return _none_fit()
        if np.max(np.abs(step)) < _NEWTON_TOL:
            break
    else:
        return _none_fit()
    mu = expit(design @ beta)
    info = design.T @ (design * (mu * (1.0 - mu))[:, None])
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return _none_fit()
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    if not np.all(np.isfinite(se)):
        return _none_fit()
    return {
        "slope": float(beta[1]),
        "slope_se": float(se[1]),
        "intercept": float(beta[0]),
        "intercept_se": float(se[0]),
    }


def linear_recalibration(y: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    """Regression calibration: ``{"mean_pred", "mean_y", "slope", "intercept"}``, the ordinary
    least squares line of ``y`` on ``pred`` (slope 1, intercept 0 when calibrated); the line is
    ``None`` under 2 rows or for a constant ``pred``."""
    if y.size == 0:
        return {"mean_pred": None, "mean_y": None, "slope": None, "intercept": None}
    mean_pred, mean_y = float(np.mean(pred)), float(np.mean(y))
    dx = pred - mean_pred
    sxx = float(np.sum(dx * dx))
    if y.size < 2 or sxx <= 1e-12 * max(float(np.sum(pred * pred)), 1e-300):
        return {"mean_pred": mean_pred, "mean_y": mean_y, "slope": None, "intercept": None}
    slope = float(np.sum(dx * (y - mean_y)) / sxx)
    return {
        "mean_pred": mean_pred,
        "mean_y": mean_y,
        "slope": slope,
        "intercept": mean_y - slope * mean_pred,
    }
