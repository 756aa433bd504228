"""Metrics of the multiclass, multilabel and regression tasks, as pure numpy functions.

Each function validates its inputs and raises :class:`~fedcare.errors.ValidationError` naming
the argument (shapes, NaN/inf, labels out of range, class probabilities that do not sum to 1).
As in :mod:`fedcare.evaluation.metrics`, a metric that is undefined for the data at hand is
``NaN``, never an exception. The numbers equal scikit-learn's (``tests/evaluation/
test_task_metrics.py``); where a class is missing the rules are:

* **macro AUROC** (multiclass one-vs-rest, multilabel per label) averages over the classes
  (labels) whose one-vs-rest AUROC is defined, i.e. that have both positive and negative rows;
  the others are *skipped* and counted (:func:`macro_auroc_detail`). scikit-learn raises
  instead. All skipped (or no row): ``NaN``.
* **macro-F1** and **balanced accuracy** follow scikit-learn's defaults: balanced accuracy is
  the mean recall over the classes present in ``y``; multiclass macro-F1 averages over the
  classes present in ``y`` or in the predictions. Multilabel macro-F1 leaves out a label that
  is neither present nor predicted (F1 is 0/0 there; scikit-learn would count it as 0).
* **R²** is ``NaN`` when ``y`` is constant or has fewer than 2 rows (scikit-learn returns 0
  or 1 there).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcare.errors import ValidationError
from fedcare.evaluation._inputs import (
    _check_finite,
    _check_probabilities,
    _rank_auroc,
    _vector,
    _zero_one,
)

__all__ = [
    "balanced_accuracy",
    "hamming_accuracy",
    "macro_auroc",
    "macro_auroc_detail",
    "macro_f1",
    "mae",
    "multiclass_accuracy",
    "multiclass_log_loss",
    "multilabel_macro_f1",
    "r2",
    "rmse",
    "subset_accuracy",
]

#: Rows of multiclass probabilities must sum to 1 within this absolute tolerance.
SUM_TOLERANCE = 1e-6


def _matrix(name: str, values: Any, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2:
        raise ValidationError(f"{name} must be 2-D (rows, classes), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValidationError(f"{name} has {arr.shape[0]} rows, expected {n} to match y")
    if arr.shape[1] < 2:
        raise ValidationError(f"{name} needs at least 2 columns, got shape {arr.shape}")
    _check_finite(name, arr)
    return arr


def _class_probabilities(y: Any, prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(y as int classes, prob)`` for multiclass metrics, validated."""
    labels = _vector("y", y)
    p = _matrix("prob", prob, labels.size)
    _check_probabilities("prob", p)
    sums = p.sum(axis=1)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        row = int(np.argmax(off))
        raise ValidationError(
            f"prob rows must sum to 1 (within {SUM_TOLERANCE:g}); {int(off.sum())} row(s) do not,"
            f" e.g. row {row} sums to {sums[row]:.6g}"
        )
    return _classes(labels, p.shape[1]), p


def _classes(labels: np.ndarray, k: int) -> np.ndarray:
    bad = (labels != np.round(labels)) | (labels < 0) | (labels >= k)
    if bad.any():
        found = np.unique(labels[bad])[:5].tolist()
        raise ValidationError(f"y must hold class indices 0..{k - 1}, found {found}")
    return labels.astype(np.int64)


def _label_matrix(y: Any, prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(y as a boolean (n, L) matrix, prob)`` for multilabel metrics, validated."""
    p = _matrix("prob", prob)
    arr = np.asarray(y, dtype=float)
    if arr.shape != p.shape:
        raise ValidationError(f"y has shape {arr.shape}, expected {p.shape} to match prob")
    _check_finite("y", arr)
    _check_probabilities("prob", p)
    return _zero_one("y", arr), p


def macro_auroc_detail(y: Any, prob: Any, *, multilabel: bool = False) -> tuple[float, int]:
    """``(macro AUROC, classes skipped)``: the mean one-vs-rest AUROC over the classes where it is
    defined, and how many classes were left out because all rows or none belong to them.

    Multiclass (``multilabel=False``): ``y`` class indices ``(n,)``, ``prob`` ``(n, K)`` rows
    summing to 1; equals ``roc_auc_score(y, prob, multi_class="ovr", average="macro")`` when
    every class is present. Multilabel: ``y`` and ``prob`` ``(n, L)``; equals
    ``roc_auc_score(y, prob, average="macro")`` when every label has both values.
    """
    if multilabel:
        truth, p = _label_matrix(y, prob)
    else:
        classes, p = _class_probabilities(y, prob)
        truth = classes[:, None] == np.arange(p.shape[1])[None, :]
    if not multilabel and p.shape[1] == 2:
        # two classes: both one-vs-rest AUROCs equal that of column 1 in exact arithmetic;
        # scikit-learn uses column 1 alone, immune to rounding in ``1 - p``
        value = _rank_auroc(truth[:, 1], p[:, 1])
        return value, 2 if np.isnan(value) else 0
    values = [_rank_auroc(truth[:, j], p[:, j]) for j in range(p.shape[1])]
    kept = [v for v in values if not np.isnan(v)]
    skipped = len(values) - len(kept)
    return (float(np.mean(kept)) if kept else float("nan")), skipped


def macro_auroc(y: Any, prob: Any, *, multilabel: bool = False) -> float:
    """The macro AUROC of :func:`macro_auroc_detail` (skipped classes left out)."""
    return macro_auroc_detail(y, prob, multilabel=multilabel)[0]


def multiclass_accuracy(y: Any, prob: Any) -> float:
    """Fraction of rows whose most probable class (first on ties) is ``y``; ``NaN`` on 0 rows."""
    classes, p = _class_probabilities(y, prob)
    if classes.size == 0:
        return float("nan")
    return float(np.mean(np.argmax(p, axis=1) == classes))


def balanced_accuracy(y: Any, prob: Any) -> float:
    """Mean recall over the classes present in ``y`` (``balanced_accuracy_score``)."""
    classes, p = _class_probabilities(y, prob)
    if classes.size == 0:
        return float("nan")
    pred = np.argmax(p, axis=1)
    present = np.unique(classes)
    return float(np.mean([np.mean(pred[classes == c] == c) for c in present]))


def _f1(truth: np.ndarray, pred: np.ndarray) -> float:
    tp = float(np.count_nonzero(truth & pred))
    denom = float(np.count_nonzero(truth)) + float(np.count_nonzero(pred))
    return 2.0 * tp / denom


def macro_f1(y: Any, prob: Any) -> float:
    """Multiclass macro-F1 of the argmax class over the classes present in ``y`` or predicted
    (``f1_score(y, argmax, average="macro")``); ``NaN`` on 0 rows."""
    classes, p = _class_probabilities(y, prob)
    if classes.size == 0:
        return float("nan")
    pred = np.argmax(p, axis=1)
    labels = np.union1d(classes, pred)
    return float(np.mean([_f1(classes == c, pred == c) for c in labels]))


def multiclass_log_loss(y: Any, prob: Any, eps: float = 1e-15) -> float:
    """Mean ``-log p[y]`` (natural log), ``p`` clipped to ``[eps, 1]``; ``NaN`` on 0 rows."""
    classes, p = _class_probabilities(y, prob)
    if classes.size == 0:
        return float("nan")
    picked = np.clip(p[np.arange(classes.size), classes], eps, 1.0)
    return float(-np.mean(np.log(picked)))


def multilabel_macro_f1(y: Any, prob: Any, threshold: float = 0.5) -> float:
    """Mean F1 over labels of ``prob >= threshold``, leaving out labels neither present nor
    predicted; ``NaN`` when none is left."""
    truth, p = _label_matrix(y, prob)
    pred = p >= threshold
    used = [j for j in range(p.shape[1]) if truth[:, j].any() or pred[:, j].any()]
    if not used:
        return float("nan")
    return float(np.mean([_f1(truth[:, j], pred[:, j]) for j in used]))


def subset_accuracy(y: Any, prob: Any, threshold: float = 0.5) -> float:
    """Fraction of rows whose every label is right at ``threshold`` (exact match)."""
    truth, p = _label_matrix(y, prob)
    if truth.shape[0] == 0:
        return float("nan")
    return float(np.mean(np.all((p >= threshold) == truth, axis=1)))


def hamming_accuracy(y: Any, prob: Any, threshold: float = 0.5) -> float:
    """Fraction of (row, label) cells right at ``threshold`` (``1 - hamming_loss``)."""
    truth, p = _label_matrix(y, prob)
    if truth.shape[0] == 0:
        return float("nan")
    return float(np.mean((p >= threshold) == truth))


def _targets(y: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _vector("pred", pred)
    target = _vector("y", y)
    if target.shape != t.shape:
        raise ValidationError(f"y has shape {target.shape}, expected {t.shape} to match pred")
    return target, t


def mae(y: Any, pred: Any) -> float:
    """Mean absolute error; ``NaN`` on 0 rows."""
    target, t = _targets(y, pred)
    return float(np.mean(np.abs(t - target))) if t.size else float("nan")


def rmse(y: Any, pred: Any) -> float:
    """Root mean squared error; ``NaN`` on 0 rows."""
    target, t = _targets(y, pred)
    return float(np.sqrt(np.mean((t - target) ** 2))) if t.size else float("nan")


def r2(y: Any, pred: Any) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``; ``NaN`` when ``y`` is constant
    or has fewer than 2 rows."""
    target, t = _targets(y, pred)
    if t.size < 2:
        return float("nan")
    ss_tot = float(np.sum((target - target.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    return float(1.0 - np.sum((target - t) ** 2) / ss_tot)
