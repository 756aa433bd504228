"""ROC and precision-recall curves, AUROC with a DeLong interval, decision-curve net benefit
and Wilson intervals, all from binned counts (pure numpy).

A *score histogram* is two integer lists over ``k`` equal-width bins of ``[0, 1]`` (the rule of
:mod:`fedcare.evaluation.calibration`): ``n[g]`` rows and ``pos[g]`` positives whose score lies
in bin ``g``. Sites send histograms, never scores; histograms of several sites add up, and
everything below is computed on the (pooled) histogram, treating the scores of one bin as tied.
When every score of a bin is the same value (scores on a grid of bin centres, say) the curves
and the AUROC equal scikit-learn's on the rows exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import norm

__all__ = [
    "auroc_delong",
    "histogram",
    "net_benefit",
    "pr_curve",
    "rebin",
    "roc_curve",
    "wilson_interval",
]


def histogram(y: np.ndarray, score: np.ndarray, k: int) -> tuple[list[int], list[int]]:
    """``(n, pos)`` per bin of labels ``y`` (0/1) and scores in ``[0, 1]``."""
    edges = np.linspace(0.0, 1.0, k + 1)
    idx = np.searchsorted(edges[1:-1], score)
    n = np.bincount(idx, minlength=k)
    pos = np.bincount(idx[y == 1], minlength=k)
    return [int(v) for v in n], [int(v) for v in pos]


def rebin(counts: Sequence[int], k: int) -> list[int]:
    """Counts over ``len(counts)`` bins merged into ``k`` bins (``len(counts)`` a multiple of
    ``k``)."""
    arr = np.asarray(counts, dtype=np.int64)
    return [int(v) for v in arr.reshape(k, -1).sum(axis=1)]


def _arrays(n: Sequence[int], pos: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    total = np.asarray(n, dtype=float)
    p = np.asarray(pos, dtype=float)
    return p, total - p


def roc_curve(n: Sequence[int], pos: Sequence[int]) -> dict[str, list[float]] | None:
    """``{"fpr", "tpr", "threshold"}`` from ``(0, 0)``, one point per non-empty bin taken from
    the top (``threshold`` is the bin's lower edge: scores above it are called positive; the
    first point's threshold is 1). Equals ``sklearn.metrics.roc_curve(...,
    drop_intermediate=False)`` when each bin holds one distinct score. ``None`` without a
    positive or a negative."""
    p, q = _arrays(n, pos)
    if p.sum() == 0 or q.sum() == 0:
        return None
    k = p.size
    keep = (p + q)[::-1] > 0
    lower = (np.arange(k)[::-1] / k)[keep]
    tpr = np.cumsum(p[::-1])[keep] / p.sum()
    fpr = np.cumsum(q[::-1])[keep] / q.sum()
    return {
        "fpr": [0.0, *fpr.tolist()],
        "tpr": [0.0, *tpr.tolist()],
        "threshold": [1.0, *lower.tolist()],
    }


def pr_curve(n: Sequence[int], pos: Sequence[int]) -> dict[str, list[float]] | None:
    """``{"recall", "precision", "threshold"}``, one point per non-empty bin taken from the top
    (recall increasing). Equals ``precision_recall_curve``'s points without its final
    ``(recall 0, precision 1)``, reversed, when each bin holds one distinct score. ``None``
    without a positive."""
    p, q = _arrays(n, pos)
    if p.sum() == 0:
        return None
    k = p.size
    keep = (p + q)[::-1] > 0
    tp = np.cumsum(p[::-1])[keep]
    called = np.cumsum((p + q)[::-1])[keep]
    return {
        "recall": (tp / p.sum()).tolist(),
        "precision": (tp / called).tolist(),
        "threshold": (np.arange(k)[::-1] / k)[keep].tolist(),
    }


def auroc_delong(n: Sequence[int], pos: Sequence[int], confidence: float) -> dict[str, Any]:
    """AUROC of the histogram (ties within a bin count 1/2) with DeLong's variance from the
    binned placement values, and its interval on the logit scale.

    A positive in bin ``g`` has placement ``V10 = (negatives below g + 1/2 negatives in g) / N``,
    a negative ``V01 = (positives above g + 1/2 positives in g) / P``; the AUROC is their mean
    and ``var = S10 / P + S01 / N`` with ``S10``, ``S01`` the sample variances of the
    placements (DeLong, DeLong & Clarke-Pearson 1988). The interval is
    ``expit(logit(A) -/+ z se / (A (1 - A)))``, inside ``(0, 1)``; at ``A`` of 0 or 1 it is the
    point. Returns ``{"value", "se", "lo", "hi"}``, ``None`` values where undefined (one class;
    the interval also needs 2 rows of each class).
    """
    p, q = _arrays(n, pos)
    m, k = p.sum(), q.sum()
    out: dict[str, Any] = {"value": None, "se": None, "lo": None, "hi": None}
    if m == 0 or k == 0:
        return out
    v10 = (np.cumsum(q) - q + 0.5 * q) / k
    v01 = (p[::-1].cumsum()[::-1] - p + 0.5 * p) / m
    auc = float(np.sum(p * v10) / m)
    out["value"] = auc
    if m < 2 or k < 2:
        return out
    s10 = float(np.sum(p * (v10 - auc) ** 2) / (m - 1))
    s01 = float(np.sum(q * (v01 - auc) ** 2) / (k - 1))
    se = math.sqrt(max(s10 / m + s01 / k, 0.0))
    out["se"] = se
    if se == 0.0 or auc <= 0.0 or auc >= 1.0:
        out["lo"] = out["hi"] = auc
        return out
    z = float(norm.ppf(0.5 + confidence / 2.0))
    centre = math.log(auc / (1.0 - auc))
    half = z * se / (auc * (1.0 - auc))
    out["lo"] = 1.0 / (1.0 + math.exp(-(centre - half)))
    out["hi"] = 1.0 / (1.0 + math.exp(-(centre + half)))
    return out


def net_benefit(
    n: Sequence[int], pos: Sequence[int], *, max_threshold: float = 0.99
) -> dict[str, list[float]] | None:
    """Decision-curve net benefit at the inner bin edges ``t`` in ``(0, max_threshold]``:
    ``model = TP/N - FP/N * t / (1 - t)`` treating the rows scored above ``t``,
    ``treat_all = prevalence - (1 - prevalence) * t / (1 - t)``; treating none is 0 (Vickers &
    Elkin 2006). ``None`` on zero rows."""
    p, q = _arrays(n, pos)
    total = p.sum() + q.sum()
    if total == 0:
        return None
    k = p.size
    edges = np.arange(1, k) / k
    use = edges <= max_threshold + 1e-12
    tp = p[::-1].cumsum()[::-1][1:]  # rows in bins above edge j (scores > edges[j])
    fp = q[::-1].cumsum()[::-1][1:]
    odds = edges / (1.0 - edges)
    prev = p.sum() / total
    model = tp / total - fp / total * odds
    treat_all = prev - (1.0 - prev) * odds
    return {
        "thresholds": edges[use].tolist(),
        "model": model[use].tolist(),
        "treat_all": treat_all[use].tolist(),
    }


def wilson_interval(k: int, n: int, confidence: float) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``k / n`` (``None`` for ``n == 0``)."""
    if n == 0:
        return None
    z = float(norm.ppf(0.5 + confidence / 2.0))
    phat = k / n
    den = 1.0 + z * z / n
    centre = (phat + z * z / (2 * n)) / den
    half = z * math.sqrt(phat * (1.0 - phat) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)
