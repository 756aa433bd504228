"""Evaluation metrics as pure numpy functions.

Every function takes 1-D arrays, never changes them, and returns a Python ``float``. A metric
that is undefined for the data at hand (AUROC at a site whose test rows hold one class only, a
C-index without a single comparable pair, any metric on zero rows) is ``NaN``, never an
exception: a federation routinely has such sites, and a report must still be written.
Malformed input (wrong shapes, ``NaN`` scores, labels other than 0/1) raises
:class:`~fedcare.errors.ValidationError` naming the argument.

:func:`compute_metrics` is what sites and baselines call: the task's metrics for a model's
scores on one :class:`~fedcare.data.base.Dataset`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ValidationError

__all__ = [
    "METRICS_BY_TASK",
    "accuracy",
    "auroc",
    "binary_log_loss",
    "cindex",
    "compute_metrics",
]

METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "auroc"),
    "survival": ("cindex",),
}
"""The metrics :func:`compute_metrics` returns for each task (besides ``"n"``)."""

# Rows of the pair matrix handled at once by :func:`cindex`: bounds memory to about
# ``_CINDEX_BLOCK * n`` booleans whatever ``n`` is.
_CINDEX_BLOCK = 1024


def _vector(name: str, values: Any, *, finite: bool = True) -> np.ndarray:
    """``values`` as a 1-D float array (no copy when possible), validated."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValidationError(f"{name} must be 1-D, got shape {arr.shape}")
    if finite and not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValidationError(f"{name} holds {bad} NaN or infinite value(s) out of {arr.size}")
    return arr


def _labels(name: str, values: Any, n: int | None = None) -> np.ndarray:
    """``values`` as a 1-D boolean array, checked to hold only 0 and 1."""
    arr = _vector(name, values)
    if n is not None and arr.shape != (n,):
        raise ValidationError(f"{name} has shape {arr.shape}, expected ({n},)")
    if not np.isin(arr, (0.0, 1.0)).all():
        bad = np.unique(arr[~np.isin(arr, (0.0, 1.0))])[:5].tolist()
        raise ValidationError(f"{name} must hold only 0 and 1, found {bad}")
    return arr == 1.0


def accuracy(y: Any, prob: Any, threshold: float = 0.5) -> float:
    """Fraction of rows whose predicted class matches the label.

    Parameters
    ----------
    y:
        Labels 0/1, shape ``(n,)``.
    prob:
        Predicted probability of class 1, shape ``(n,)``; the predicted class is
        ``prob >= threshold``.
    threshold:
        Decision threshold.

    Returns
    -------
    float
        Accuracy in ``[0, 1]``; ``NaN`` when ``n == 0``.

    Raises
    ------
    ValidationError
        Shapes differ, ``prob`` holds NaN, or ``y`` holds values other than 0/1.
    """
    p = _vector("prob", prob)
    labels = _labels("y", y, p.size)
    if p.size == 0:
        return float("nan")
    return float(np.mean((p >= threshold) == labels))


def auroc(y: Any, score: Any) -> float:
    """Area under the ROC curve, as the Mann–Whitney U statistic.

    ``AUROC = P(score_pos > score_neg) + 1/2 P(score_pos == score_neg)``, computed from average
    ranks in ``O(n log n)``; identical to scikit-learn's ``roc_auc_score`` including ties.

    Parameters
    ----------
    y:
        Labels 0/1, shape ``(n,)``.
    score:
        Any score that increases with the probability of class 1, shape ``(n,)``.

    Returns
    -------
    float
        AUROC in ``[0, 1]``; ``NaN`` when only one class (or no row) is present.

    Raises
    ------
    ValidationError
        Shapes differ, ``score`` holds NaN, or ``y`` holds values other than 0/1.
    """
    s = _vector("score", score)
    pos = _labels("y", y, s.size)
    n_pos = int(np.count_nonzero(pos))
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # Average 1-based rank of each distinct value: its last rank minus half its tie span.
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = float(np.sum(avg_rank[inverse.reshape(-1)][pos]))
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def cindex(event: Any, time: Any, risk: Any) -> float:
    """Harrell's concordance index of a risk score against censored survival times.

    A pair ``(i, j)`` is *comparable* when ``i`` had the event and left the study first:
    ``event_i == 1`` and either ``time_i < time_j``, or ``time_i == time_j`` and ``j`` was
    censored. Two events at the same time are not comparable, nor is any pair whose earlier
    member was censored. This is exactly the rule of ``lifelines.utils.concordance_index``.
    A comparable pair is concordant when ``risk_i > risk_j`` (higher risk, earlier event) and
    counts 1/2 when ``risk_i == risk_j``.

    Runs in ``O(n^2)`` vectorized operations, in row blocks so memory stays ``O(n)``; fast up
    to several thousand rows.

    Parameters
    ----------
    event:
        Event indicator 0/1 (1 = event observed, 0 = censored), shape ``(n,)``.
    time:
        Event or censoring times, shape ``(n,)``.
    risk:
        Predicted risk (e.g. a Cox linear predictor), shape ``(n,)``.

    Returns
    -------
    float
        C-index in ``[0, 1]``; ``NaN`` when there is no comparable pair.

    Raises
    ------
    ValidationError
        Shapes differ, ``time`` or ``risk`` holds NaN, or ``event`` holds values other than 0/1.

    Notes
    -----
    ``lifelines`` takes predicted *survival times*, higher meaning later; pass ``-risk`` to
    ``concordance_index(time, -risk, event)`` to get the same number.
    """
    r = _vector("risk", risk)
    t = _vector("time", time)
    if t.shape != r.shape:
        raise ValidationError(f"time has shape {t.shape}, expected {r.shape} to match risk")
    observed = _labels("event", event, r.size)
    t_ev, r_ev = t[observed], r[observed]
    censored = ~observed
    concordant = 0.0
    tied = 0.0
    pairs = 0
    for start in range(0, t_ev.size, _CINDEX_BLOCK):
        ti = t_ev[start : start + _CINDEX_BLOCK, None]
        ri = r_ev[start : start + _CINDEX_BLOCK, None]
        comparable = (t[None, :] > ti) | ((t[None, :] == ti) & censored[None, :])
        pairs += int(np.count_nonzero(comparable))
        concordant += float(np.count_nonzero(comparable & (ri > r[None, :])))
        tied += float(np.count_nonzero(comparable & (ri == r[None, :])))
    if pairs == 0:
        return float("nan")
    return float((concordant + 0.5 * tied) / pairs)


def binary_log_loss(y: Any, prob: Any, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy ``-mean(y log p + (1 - y) log(1 - p))``.

    Parameters
    ----------
    y:
        Labels 0/1, shape ``(n,)``.
    prob:
        Predicted probability of class 1, shape ``(n,)``, clipped to ``[eps, 1 - eps]``.
    eps:
        Clipping bound that keeps the loss finite for confident mistakes.

    Returns
    -------
    float
        The loss (natural log); ``NaN`` when ``n == 0``.

    Raises
    ------
    ValidationError
        Shapes differ, ``prob`` holds NaN or lies outside ``[0, 1]``, or ``y`` is not 0/1.
    """
    p = _vector("prob", prob)
    labels = _labels("y", y, p.size)
    _check_probabilities("prob", p)
    if p.size == 0:
        return float("nan")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(np.where(labels, np.log(p), np.log1p(-p))))


def _check_probabilities(name: str, p: np.ndarray) -> None:
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValidationError(
            f"{name} must be probabilities in [0, 1], got values in [{p.min():.4g}, {p.max():.4g}]"
        )


def compute_metrics(
    task: Literal["binary", "survival"], data: Dataset, scores: Any
) -> dict[str, float]:
    """The task's metrics for one model's scores on one dataset.

    Parameters
    ----------
    task:
        ``"binary"``: ``scores`` are probabilities of class 1 and the result holds
        ``"accuracy"`` (threshold 0.5) and ``"auroc"``. ``"survival"``: ``scores`` are risks
        (higher = earlier event), ``data.y`` is the event indicator, ``data.time`` the times,
        and the result holds ``"cindex"``.
    data:
        The rows the scores were predicted for.
    scores:
        Shape ``(len(data),)``, finite.

    Returns
    -------
    dict[str, float]
        The metrics above plus ``"n"``, the number of rows (an ``int``). Undefined metrics
        are ``NaN``.

    Raises
    ------
    ValidationError
        Unknown task, ``scores`` of the wrong shape or holding NaN/inf, probabilities outside
        ``[0, 1]``, labels other than 0/1, or a survival dataset without times.
    """
    if task not in METRICS_BY_TASK:
        raise ValidationError(f"task must be one of {sorted(METRICS_BY_TASK)}, got {task!r}")
    s = np.asarray(scores, dtype=float)
    n = len(data)
    if s.shape != (n,):
        raise ValidationError(f"scores have shape {s.shape}, expected ({n},) for {n} rows")
    s = _vector("scores", s)
    if task == "binary":
        _check_probabilities("scores", s)
        return {"accuracy": accuracy(data.y, s), "auroc": auroc(data.y, s), "n": n}
    if data.time is None:
        raise ValidationError("task 'survival' needs data.time, but the dataset has none")
    return {"cindex": cindex(data.y, data.time, s), "n": n}
