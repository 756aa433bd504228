"""Evaluation metrics as pure numpy functions.

The metrics of the binary and survival tasks live here; those of the multiclass, multilabel and
regression tasks in :mod:`fedcare.evaluation.task_metrics`. :data:`METRICS_BY_TASK` and
:data:`HEADLINE_METRIC` (from :mod:`fedcare.records.tasks`) name what each task reports.

Every function here takes 1-D arrays, never changes them, and returns a Python ``float``. A metric
that is undefined for the data at hand (AUROC at a site whose test rows hold one class only, a
C-index without a single comparable pair, any metric on zero rows) is ``NaN``, never an
exception: a federation routinely has such sites, and a report must still be written.
Malformed input (wrong shapes, ``NaN`` scores, labels other than 0/1) raises
:class:`~fedcare.errors.ValidationError` naming the argument.

:func:`compute_metrics` is what sites and baselines call: the task's metrics for a model's
scores on one :class:`~fedcare.data.base.Dataset`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ValidationError
from fedcare.evaluation._inputs import _check_probabilities, _labels, _rank_auroc, _vector
from fedcare.evaluation.task_metrics import (
    balanced_accuracy,
    hamming_accuracy,
    macro_auroc,
    macro_f1,
    mae,
    multiclass_accuracy,
    multiclass_log_loss,
    multilabel_macro_f1,
    r2,
    rmse,
    subset_accuracy,
)
from fedcare.records.tasks import HEADLINE_METRIC, METRICS_BY_TASK, TaskType, check_task

__all__ = [
    "HEADLINE_METRIC",
    "METRICS_BY_TASK",
    "accuracy",
    "auroc",
    "binary_log_loss",
    "cindex",
    "compute_metrics",
]

# Rows of the pair matrix handled at once by :func:`cindex`: bounds memory to about
# ``_CINDEX_BLOCK * n`` booleans whatever ``n`` is.
_CINDEX_BLOCK = 1024


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
    return _rank_auroc(pos, s)


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


def compute_metrics(task: TaskType | str, data: Dataset, scores: Any) -> dict[str, float]:
    """The task's metrics for one model's scores on one dataset.

    Parameters
    ----------
    task:
        One of :data:`fedcare.records.tasks.TASKS`; the result holds the metrics
        ``METRICS_BY_TASK[task]``, headline ``HEADLINE_METRIC[task]``:

        * ``"binary"``: ``scores`` ``(n,)`` are probabilities of class 1; ``"accuracy"``
          (threshold 0.5) and ``"auroc"``.
        * ``"multiclass"``: ``scores`` ``(n, K)`` class probabilities, rows summing to 1;
          ``data.y`` class indices ``0 .. K-1``; ``"macro_auroc"`` (one-vs-rest, classes
          absent from ``data.y`` skipped), ``"accuracy"``, ``"balanced_accuracy"``,
          ``"macro_f1"`` (argmax class) and ``"log_loss"``.
        * ``"multilabel"``: ``scores`` ``(n, L)`` probabilities per label, ``data.y`` ``(n, L)``
          0/1; ``"macro_auroc"``, ``"macro_f1"``, ``"subset_accuracy"`` (every label of a row
          right) and ``"hamming_accuracy"`` (share of labels right), all at threshold 0.5.
        * ``"regression"``: ``scores`` ``(n,)`` predicted values; ``"mae"``, ``"rmse"``, ``"r2"``.
        * ``"survival"``: ``scores`` are risks (higher = earlier event), ``data.y`` is the event
          indicator, ``data.time`` the times; ``"cindex"``.

        The rules for missing classes are in :mod:`fedcare.evaluation.task_metrics`.
    data:
        The rows the scores were predicted for.
    scores:
        Shape ``(len(data),)`` (``(len(data), K)`` for multiclass and multilabel), finite.

    Returns
    -------
    dict[str, float]
        The metrics above plus ``"n"``, the number of rows (an ``int``). Undefined metrics
        are ``NaN``.

    Raises
    ------
    ValidationError
        Unknown task, ``scores`` of the wrong shape or holding NaN/inf, probabilities outside
        ``[0, 1]`` (or multiclass rows not summing to 1), labels out of range, or a survival
        dataset without times.
    """
    task = check_task(task)
    n = len(data)
    if task == "multiclass":
        return {**_multiclass(data.y, scores), "n": n}
    if task == "multilabel":
        return {**_multilabel(data.y, scores), "n": n}
    s = np.asarray(scores, dtype=float)
    if s.shape != (n,):
        raise ValidationError(f"scores have shape {s.shape}, expected ({n},) for {n} rows")
    s = _vector("scores", s)
    if task == "binary":
        _check_probabilities("scores", s)
        return {"accuracy": accuracy(data.y, s), "auroc": auroc(data.y, s), "n": n}
    if task == "regression":
        y = data.y
        return {"mae": mae(y, s), "rmse": rmse(y, s), "r2": r2(y, s), "n": n}
    if data.time is None:
        raise ValidationError("task 'survival' needs data.time, but the dataset has none")
    return {"cindex": cindex(data.y, data.time, s), "n": n}


def _multiclass(y: Any, prob: Any) -> dict[str, float]:
    return {
        "macro_auroc": macro_auroc(y, prob),
        "accuracy": multiclass_accuracy(y, prob),
        "balanced_accuracy": balanced_accuracy(y, prob),
        "macro_f1": macro_f1(y, prob),
        "log_loss": multiclass_log_loss(y, prob),
    }


def _multilabel(y: Any, prob: Any) -> dict[str, float]:
    return {
        "macro_auroc": macro_auroc(y, prob, multilabel=True),
        "macro_f1": multilabel_macro_f1(y, prob),
        "subset_accuracy": subset_accuracy(y, prob),
        "hamming_accuracy": hamming_accuracy(y, prob),
    }
