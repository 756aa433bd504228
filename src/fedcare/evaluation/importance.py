"""Federated permutation importance (re-exported by :mod:`fedcare.evaluation.explain`, whose
docstring gives the shapes and what they reveal).

A site permutes one column of its preprocessed test matrix at a time, within its own rows,
``repeats`` times, and reports the mean drop of the task's headline metric; the coordinator
averages the drops over sites weighted by the number of rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ConfigError, ValidationError
from fedcare.evaluation.metrics import compute_metrics
from fedcare.records.tasks import HEADLINE_METRIC, LOWER_IS_BETTER, check_task

__all__ = ["combine_importance", "site_importance"]


def _metric(task: str, X: np.ndarray, y: Any, time: Any, scores: Any) -> float | None:
    value = compute_metrics(task, Dataset(X=X, y=np.asarray(y), time=time), scores)[
        HEADLINE_METRIC[task]
    ]
    return None if math.isnan(value) else float(value)


def site_importance(
    predict: Callable[[np.ndarray], np.ndarray],
    X: Any,
    y: Any,
    task: str,
    *,
    time: Any = None,
    feature_names: Sequence[str],
    repeats: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Mean drop of the headline metric when each column is permuted within the site's rows.

    Parameters
    ----------
    predict:
        The model's scores for a preprocessed matrix (``adapter.predict`` with the final params).
    X, y:
        The site's preprocessed test rows ``(n, d)`` and labels.
    task:
        The task; its :data:`~fedcare.records.tasks.HEADLINE_METRIC` is the metric.
    time:
        Survival times (survival task).
    feature_names:
        The ``d`` column names.
    repeats:
        Permutations per column (>= 1).
    rng:
        Draws the permutations.

    Returns
    -------
    dict
        ``{"metric", "baseline", "drops": {name: mean drop | None}, "n", "repeats",
        "lower_is_better"}``, or ``{"metric", "n", "unsupported": reason}`` for inputs that are
        not a 2-D table. A drop is ``None`` when the metric is undefined on these rows.

    Raises
    ------
    ConfigError
        ``repeats`` below 1.
    ValidationError
        ``feature_names`` does not match the columns.
    """
    task = check_task(task)
    metric = HEADLINE_METRIC[task]
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"importance repeats must be an integer >= 1, got {repeats!r}")
    arr = np.asarray(X)
    if arr.ndim != 2:
        reason = f"permutation importance needs a 2-D feature table, got shape {arr.shape}"
        return {"metric": metric, "n": len(arr), "unsupported": reason}
    names = list(feature_names)
    if len(names) != arr.shape[1]:
        raise ValidationError(f"{len(names)} feature names for {arr.shape[1]} columns")
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    baseline = _metric(task, arr, y, time, predict(arr))
    drops: dict[str, float | None] = {}
    for j, name in enumerate(names):
        values = []
        for _ in range(repeats):
            shuffled = arr.copy()
            shuffled[:, j] = arr[rng.permutation(len(arr)), j]
            values.append(_metric(task, shuffled, y, time, predict(shuffled)))
        ok = [v for v in values if v is not None]
        drops[name] = (
            sign * (baseline - float(np.mean(ok))) if baseline is not None and ok else None
        )
    return {
        "metric": metric,
        "baseline": baseline,
        "drops": drops,
        "n": len(arr),
        "repeats": repeats,
        "lower_is_better": metric in LOWER_IS_BETTER,
    }


def combine_importance(per_site: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """n-weighted mean drop per feature over sites, with the between-site SD.

    Parameters
    ----------
    per_site:
        Site -> :func:`site_importance` result (``unsupported`` ones are skipped).

    Returns
    -------
    dict
        ``{"metric", "sites", "rows": [{"feature", "drop", "sd_between_sites", "sites"}]}``,
        rows by drop, largest first (features without any drop last).

    Raises
    ------
    ValidationError
        Sites report different metrics.
    """
    usable = {s: r for s, r in per_site.items() if r and "unsupported" not in r}
    metrics = {str(r.get("metric")) for r in usable.values()}
    if len(metrics) > 1:
        raise ValidationError(f"sites report importance for different metrics: {sorted(metrics)}")
    features: list[str] = []
    for r in usable.values():
        features += [f for f in r.get("drops", {}) if f not in features]
    rows: list[dict[str, Any]] = []
    for feature in features:
        pairs = [
            (float(r["n"]), float(r["drops"][feature]))
            for r in usable.values()
            if r.get("drops", {}).get(feature) is not None and r.get("n")
        ]
        weight = sum(n for n, _ in pairs)
        mean = sum(n * d for n, d in pairs) / weight if weight else None
        sd = (
            math.sqrt(sum(n * (d - mean) ** 2 for n, d in pairs) / weight)
            if mean is not None and len(pairs) > 1
            else None
        )
        rows.append({"feature": feature, "drop": mean, "sd_between_sites": sd, "sites": len(pairs)})
    rows.sort(key=lambda row: (row["drop"] is None, -float(row["drop"] or 0.0)))
    return {"metric": metrics.pop() if metrics else None, "sites": len(usable), "rows": rows}
