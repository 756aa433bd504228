"""The clinical validation summary of one site, and the functions the coordinator applies to the
summaries it receives (issue 15; the shapes are those of ``contracts/validation.md``).

* :func:`site_summary` (at a site, on its test rows): prevalence, no-information rate,
  confusion matrix at the decision threshold, the task's metrics with percentile bootstrap
  intervals (:mod:`~fedcare.evaluation.bootstrap`), calibration
  (:mod:`~fedcare.evaluation.calibration`) and, for binary tasks, the score histogram behind
  the ROC and precision-recall curves (:mod:`~fedcare.evaluation.curves`). Every number is an
  aggregate of the site's rows; an undefined one is ``None`` (JSON ``null``), never ``NaN``.
* :func:`summary_problem` (at the coordinator): why a received summary is malformed or
  inconsistent (:mod:`~fedcare.evaluation.clinical_checks`), or ``None``.
* :func:`combine_sites`: the overall block: pooled counts, metrics and curves, and a
  random-effects meta-analysis across sites (:mod:`~fedcare.evaluation.clinical_pool`).
* :func:`site_curves`: one site's ROC and precision-recall curves from its histogram.

Site summary, version 1 (keys by task)::

    {"version": 1, "task", "n", "confidence", "bootstrap", "threshold",
     "prevalence",            # binary: positives / n; multiclass: list per class
     "no_information_rate",   # binary, multiclass: share of the majority class
     "confusion",             # binary {"tp", "fp", "tn", "fn"}; multiclass {"matrix"} (rows truth)
     "metrics": {name: {"value", "lo", "hi"}},
     "calibration",           # binary {"bins", "brier", "ece", "slope", "slope_se", "intercept",
                              #   "intercept_se"}; regression {"mean_pred", "mean_y", "slope",
                              #   "intercept"}
     "curve": {"bins", "n", "pos"}}   # binary

Metrics: binary ``accuracy auroc sensitivity specificity ppv npv brier log_loss``; multiclass
``macro_auroc accuracy balanced_accuracy macro_f1 log_loss``; multilabel ``macro_auroc macro_f1
subset_accuracy hamming_accuracy``; regression ``mae rmse r2``; survival ``cindex``. ``value``
is the metric on all rows, ``lo``/``hi`` the percentile interval over ``spec["bootstrap"]``
resamples (resamples where the metric is undefined are skipped; ``None`` when fewer than half
remain or without bootstrap). A percentile interval can miss its own point estimate for a
biased statistic; the interval is then widened to include it, so ``lo <= value <= hi`` always.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedcare.errors import ValidationError
from fedcare.evaluation import bootstrap as boot
from fedcare.evaluation.calibration import (
    ece_from_bins,
    linear_recalibration,
    logistic_recalibration,
    reliability_bins,
)
from fedcare.evaluation.clinical_checks import summary_problem
from fedcare.evaluation.clinical_pool import combine_sites
from fedcare.evaluation.curves import histogram, pr_curve, roc_curve
from fedcare.evaluation.metrics import accuracy, auroc, binary_log_loss, cindex
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
from fedcare.records.tasks import check_task

__all__ = ["SUMMARY_VERSION", "combine_sites", "site_curves", "site_summary", "summary_problem"]

#: The version of the site summary's shape.
SUMMARY_VERSION = 1

Weighted = Callable[[np.ndarray], dict[str, np.ndarray]]


def number(value: Any) -> float | None:
    """``value`` as a float, ``None`` when it is ``None``, NaN or infinite."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _metric_block(
    points: Mapping[str, float],
    weighted: Weighted,
    n: int,
    spec: Mapping[str, Any],
    rng: np.random.Generator,
) -> dict[str, dict[str, float | None]]:
    b = int(spec.get("bootstrap", 200))
    confidence = float(spec.get("confidence", 0.95))
    samples = boot.bootstrap(n, b, rng, weighted) if b > 0 and n > 0 else {}
    out: dict[str, dict[str, float | None]] = {}
    for name, point in points.items():
        value = number(point)
        entry: dict[str, float | None] = {"value": value, "lo": None, "hi": None}
        ci = boot.percentile_interval(samples[name], confidence) if name in samples else None
        if value is not None and ci is not None:
            entry["lo"], entry["hi"] = min(ci[0], value), max(ci[1], value)
        out[name] = entry
    return out


def _binary(
    y: np.ndarray, p: np.ndarray, spec: Mapping[str, Any], rng: np.random.Generator
) -> dict[str, Any]:
    threshold = float(spec.get("threshold", 0.5))
    acc, auc, ll = accuracy(y, p, threshold), auroc(y, p), binary_log_loss(y, p)  # validate
    n = y.size
    weighted = boot.binary_weighted(y, p, threshold)
    points = {k: float(v[0]) for k, v in weighted(np.ones((1, n))).items()}
    points.update(accuracy=acc, auroc=auc, log_loss=ll)
    pos, pred = y == 1, p >= threshold
    npos = int(pos.sum())
    bins = reliability_bins(y, p, int(spec.get("bins", 10)))
    k = int(spec.get("curve_bins", 100))
    curve_n, curve_pos = histogram(y, p, k)
    return {
        "prevalence": npos / n if n else None,
        "no_information_rate": max(npos, n - npos) / n if n else None,
        "confusion": {
            "tp": int(np.sum(pos & pred)),
            "fp": int(np.sum(~pos & pred)),
            "tn": int(np.sum(~pos & ~pred)),
            "fn": int(np.sum(pos & ~pred)),
        },
        "metrics": _metric_block(points, weighted, n, spec, rng),
        "calibration": {
            "bins": bins,
            "brier": number(points["brier"]),
            "ece": ece_from_bins(bins),
            **logistic_recalibration(y, p),
        },
        "curve": {"bins": k, "n": curve_n, "pos": curve_pos},
    }


def _multiclass(
    y: np.ndarray, prob: np.ndarray, spec: Mapping[str, Any], rng: np.random.Generator
) -> dict[str, Any]:
    points = {
        "macro_auroc": macro_auroc(y, prob),
        "accuracy": multiclass_accuracy(y, prob),
        "balanced_accuracy": balanced_accuracy(y, prob),
        "macro_f1": macro_f1(y, prob),
        "log_loss": multiclass_log_loss(y, prob),
    }
    n, k = y.size, prob.shape[1]
    classes = y.astype(np.int64)
    counts = np.bincount(classes, minlength=k)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (classes, np.argmax(prob, axis=1)), 1)
    return {
        "prevalence": (counts / n).tolist() if n else None,
        "no_information_rate": float(counts.max() / n) if n else None,
        "confusion": {"matrix": matrix.tolist()},
        "metrics": _metric_block(points, boot.multiclass_weighted(y, prob), n, spec, rng),
    }


def _multilabel(
    y: np.ndarray, prob: np.ndarray, spec: Mapping[str, Any], rng: np.random.Generator
) -> dict[str, Any]:
    threshold = float(spec.get("threshold", 0.5))
    points = {
        "macro_auroc": macro_auroc(y, prob, multilabel=True),
        "macro_f1": multilabel_macro_f1(y, prob, threshold),
        "subset_accuracy": subset_accuracy(y, prob, threshold),
        "hamming_accuracy": hamming_accuracy(y, prob, threshold),
    }
    weighted = boot.multilabel_weighted(y, prob, threshold)
    return {"metrics": _metric_block(points, weighted, y.shape[0], spec, rng)}


def _regression(
    y: np.ndarray, pred: np.ndarray, spec: Mapping[str, Any], rng: np.random.Generator
) -> dict[str, Any]:
    points = {"mae": mae(y, pred), "rmse": rmse(y, pred), "r2": r2(y, pred)}
    weighted = boot.regression_weighted(y, pred)
    return {
        "metrics": _metric_block(points, weighted, y.size, spec, rng),
        "calibration": linear_recalibration(y, pred),
    }


def _survival(
    event: np.ndarray,
    time: Any,
    risk: np.ndarray,
    spec: Mapping[str, Any],
    rng: np.random.Generator,
) -> dict[str, Any]:
    if time is None:
        raise ValidationError("task 'survival' needs time, got None")
    t = np.asarray(time, dtype=float)
    points = {"cindex": cindex(event, t, risk)}
    weighted = boot.survival_weighted(event, t, risk)
    return {"metrics": _metric_block(points, weighted, risk.size, spec, rng)}


def site_summary(
    task: str,
    y: Any,
    scores: Any,
    *,
    time: Any = None,
    spec: Mapping[str, Any],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """One site's clinical validation summary (module docstring) of a model's ``scores`` on its
    test rows.

    Parameters
    ----------
    task:
        One of :data:`fedcare.records.tasks.TASKS`.
    y:
        Labels: 0/1 ``(n,)`` (binary; survival: the event indicator), class indices ``(n,)``
        (multiclass), 0/1 ``(n, L)`` (multilabel), values ``(n,)`` (regression).
    scores:
        The model's outputs: P(y = 1) ``(n,)``, class probabilities ``(n, K)``, label
        probabilities ``(n, L)``, predicted values ``(n,)`` or risks ``(n,)``.
    time:
        Survival times ``(n,)`` (survival only).
    spec:
        The study's validation section as a dict: ``threshold``, ``bins``, ``curve_bins``,
        ``bootstrap``, ``confidence`` (defaults 0.5, 10, 100, 200, 0.95).
    rng:
        Draws the bootstrap resamples.

    Returns
    -------
    dict
        JSON-able (``json.dumps(..., allow_nan=False)`` succeeds).

    Raises
    ------
    ValidationError
        Unknown task, or labels/scores the task's metrics refuse (shapes, NaN, probabilities
        outside ``[0, 1]``, labels out of range), or a survival task without ``time``.
    """
    task = check_task(task)
    y_arr = np.asarray(y, dtype=float)
    s = np.asarray(scores, dtype=float)
    n = int(y_arr.shape[0]) if y_arr.ndim else 0
    if s.shape[:1] != (n,):
        raise ValidationError(f"scores have shape {s.shape}, expected {n} rows to match y")
    out: dict[str, Any] = {
        "version": SUMMARY_VERSION,
        "task": task,
        "n": n,
        "confidence": float(spec.get("confidence", 0.95)),
        "bootstrap": int(spec.get("bootstrap", 200)),
        "threshold": float(spec.get("threshold", 0.5)),
    }
    if task == "binary":
        out.update(_binary(y_arr, s, spec, rng))
    elif task == "multiclass":
        out.update(_multiclass(y_arr, s, spec, rng))
    elif task == "multilabel":
        out.update(_multilabel(y_arr, s, spec, rng))
    elif task == "regression":
        out.update(_regression(y_arr, s, spec, rng))
    else:
        out.update(_survival(y_arr, time, s, spec, rng))
    return out


def site_curves(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``{"roc": {"fpr", "tpr", "threshold"} | None, "pr": {"recall", "precision", "threshold"}
    | None}`` from a binary site summary's histogram (``None`` where a class is missing);
    ``{}`` for a summary without a histogram."""
    curve = summary.get("curve")
    if not isinstance(curve, Mapping):
        return {}
    return {"roc": roc_curve(curve["n"], curve["pos"]), "pr": pr_curve(curve["n"], curve["pos"])}
