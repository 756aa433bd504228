"""Checks of a clinical site summary received from a site (which the coordinator does not
trust): :func:`summary_problem` names the first malformed or inconsistent field, or returns
``None``. The shape is that of :func:`fedcare.evaluation.clinical.site_summary`.

What is checked: the version and task; every count a whole number ``>= 0``; the counts
consistent with each other (confusion cells and reliability and histogram bins summing to
``n``, positives within their bin, the prevalence equal to the positives' share, histogram bins
merging into the reliability bins); every probability, rate and probability-scale metric in
``[0, 1]`` and every number finite; ``lo <= value <= hi`` for each interval; list lengths
bounded (reliability bins <= 100, histogram bins <= 1000, classes <= 1000); no unknown key.
The subgroup, information and importance parts are checked by their own modules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedcare.records.tasks import TASKS

__all__ = ["MAX_BINS", "MAX_CLASSES", "MAX_CURVE_BINS", "SITE_METRICS", "summary_problem"]

MAX_BINS = 100
MAX_CURVE_BINS = 1000
MAX_CLASSES = 1000
MAX_ROWS = 10**9
_TOL = 1e-6

#: The metrics a site summary reports for each task.
SITE_METRICS: dict[str, tuple[str, ...]] = {
    "binary": (
        "accuracy",
        "auroc",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "brier",
        "log_loss",
    ),
    "multiclass": ("macro_auroc", "accuracy", "balanced_accuracy", "macro_f1", "log_loss"),
    "multilabel": ("macro_auroc", "macro_f1", "subset_accuracy", "hamming_accuracy"),
    "regression": ("mae", "rmse", "r2"),
    "survival": ("cindex",),
}
# metric -> allowed range (inclusive)
_RANGE: dict[str, tuple[float, float]] = {
    "log_loss": (0.0, 40.0),
    "mae": (0.0, math.inf),
    "rmse": (0.0, math.inf),
    "r2": (-math.inf, 1.0),
}
_COMMON = {"version", "task", "n", "confidence", "bootstrap", "threshold", "metrics"}
_EXTRA = {"subgroups", "information", "importance", "notes"}
_KEYS: dict[str, set[str]] = {
    "binary": {"prevalence", "no_information_rate", "confusion", "calibration", "curve"},
    "multiclass": {"prevalence", "no_information_rate", "confusion"},
    "multilabel": set(),
    "regression": {"calibration"},
    "survival": set(),
}
_BINARY_CALIBRATION = ("brier", "ece", "slope", "slope_se", "intercept", "intercept_se")


class _Problem(Exception):
    pass


def summary_problem(summary: Mapping[str, Any]) -> str | None:
    """Why ``summary`` (a site summary parsed from JSON) is not acceptable, in one line naming
    the field, or ``None`` when it is."""
    try:
        _check(summary)
    except _Problem as problem:
        return str(problem)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(
    value: Any, field: str, lo: float = -math.inf, hi: float = math.inf, *, null: bool = True
) -> float | None:
    if value is None and null:
        return None
    if not _is_number(value) or not math.isfinite(value):
        raise _Problem(f"{field} must be a finite number, got {value!r}"[:200])
    if not lo - _TOL * max(1.0, abs(lo) if math.isfinite(lo) else 1.0) <= value:
        raise _Problem(f"{field} must be >= {lo:g}, got {value!r}")
    if not value <= hi + _TOL * max(1.0, abs(hi) if math.isfinite(hi) else 1.0):
        raise _Problem(f"{field} must be <= {hi:g}, got {value!r}")
    return float(value)


def _prob(value: Any, field: str, *, null: bool = True) -> float | None:
    return _num(value, field, 0.0, 1.0, null=null)


def _count(value: Any, field: str, hi: float = MAX_ROWS) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Problem(f"{field} must be a whole number, got {value!r}"[:200])
    if value < 0:
        raise _Problem(f"{field} must be >= 0, got {value}")
    if value > hi:
        raise _Problem(f"{field} must be <= {hi:g}, got {value}")
    return value


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Problem(f"{field} must be an object, got {type(value).__name__}")
    return value


def _list(value: Any, field: str, most: int, *, least: int = 0) -> Sequence[Any]:
    if not isinstance(value, list):
        raise _Problem(f"{field} must be a list, got {type(value).__name__}")
    if not least <= len(value) <= most:
        raise _Problem(f"{field} must hold {least} to {most} entries, got {len(value)}")
    return value


def _check(summary: Mapping[str, Any]) -> None:
    s = _mapping(summary, "summary")
    if s.get("version") != 1 or isinstance(s.get("version"), bool):
        raise _Problem(f"version must be 1, got {s.get('version')!r}"[:200])
    task = s.get("task")
    if task not in TASKS:
        raise _Problem(f"task must be one of {list(TASKS)}, got {task!r}"[:200])
    keys = _COMMON | _KEYS[task]
    unknown = sorted(str(k) for k in s if k not in keys | _EXTRA)
    if unknown:
        raise _Problem(f"unknown field(s) {unknown[:5]}"[:200])
    missing = sorted(k for k in keys if k not in s)
    if missing:
        raise _Problem(f"missing field(s) {missing}")
    n = _count(s["n"], "n")
    _num(s["confidence"], "confidence", 0.5, 1.0, null=False)
    _count(s["bootstrap"], "bootstrap", 2000)
    _num(s["threshold"], "threshold", 0.0, 1.0, null=False)
    _metrics(s["metrics"], task)
    if task == "binary":
        _binary(s, n)
    elif task == "multiclass":
        _multiclass(s, n)
    elif task == "regression":
        cal = _mapping(s["calibration"], "calibration")
        for key in ("mean_pred", "mean_y", "slope", "intercept"):
            _num(cal.get(key), f"calibration.{key}")
        if set(cal) - {"mean_pred", "mean_y", "slope", "intercept"}:
            raise _Problem("calibration has unknown field(s)")


def _metrics(value: Any, task: str) -> None:
    metrics = _mapping(value, "metrics")
    allowed = SITE_METRICS[task]
    for name, entry in metrics.items():
        if name not in allowed:
            raise _Problem(f"metrics.{str(name)[:40]} is not a {task} metric")
        lo_ok, hi_ok = _RANGE.get(name, (0.0, 1.0))
        e = _mapping(entry, f"metrics.{name}")
        if set(e) - {"value", "lo", "hi"}:
            raise _Problem(f"metrics.{name} may hold only value, lo and hi")
        v = _num(e.get("value"), f"metrics.{name}.value", lo_ok, hi_ok)
        lo = _num(e.get("lo"), f"metrics.{name}.lo", lo_ok, hi_ok)
        hi = _num(e.get("hi"), f"metrics.{name}.hi", lo_ok, hi_ok)
        if v is None and (lo is not None or hi is not None):
            raise _Problem(f"metrics.{name} has an interval but no value")
        if lo is not None and hi is not None and lo > hi:
            raise _Problem(f"metrics.{name}: lo {lo} > hi {hi}")
        if v is not None and ((lo is not None and lo > v) or (hi is not None and v > hi)):
            raise _Problem(f"metrics.{name}: value {v} outside its interval [{lo}, {hi}]")


def _binary(s: Mapping[str, Any], n: int) -> None:
    conf = _mapping(s["confusion"], "confusion")
    if set(conf) != {"tp", "fp", "tn", "fn"}:
        raise _Problem("confusion must hold exactly tp, fp, tn, fn")
    cells = {k: _count(conf[k], f"confusion.{k}") for k in ("tp", "fp", "tn", "fn")}
    if sum(cells.values()) != n:
        raise _Problem(f"confusion cells sum to {sum(cells.values())}, not n = {n}")
    positives = cells["tp"] + cells["fn"]
    prev = _prob(s["prevalence"], "prevalence", null=n == 0)
    nir = _prob(s["no_information_rate"], "no_information_rate", null=n == 0)
    if n and prev is not None and abs(prev - positives / n) > _TOL:
        raise _Problem(f"prevalence {prev} is not positives / n = {positives}/{n}")
    if n and nir is not None and abs(nir - max(positives, n - positives) / n) > _TOL:
        raise _Problem(f"no_information_rate {nir} is not the majority share")
    cal = _mapping(s["calibration"], "calibration")
    if set(cal) - {"bins", *_BINARY_CALIBRATION}:
        raise _Problem("calibration has unknown field(s)")
    for key in _BINARY_CALIBRATION:
        if key in ("brier", "ece"):
            _prob(cal.get(key), f"calibration.{key}")
        else:
            _num(cal.get(key), f"calibration.{key}", 0.0 if key.endswith("_se") else -math.inf)
    bins = _list(cal.get("bins"), "calibration.bins", MAX_BINS, least=1)
    k = len(bins)
    edges = np.linspace(0.0, 1.0, k + 1)
    bin_n, bin_pos = [], []
    for i, b in enumerate(bins):
        field = f"calibration.bins[{i}]"
        b = _mapping(b, field)
        if set(b) != {"lo", "hi", "n", "pos", "sum_p"}:
            raise _Problem(f"{field} must hold exactly lo, hi, n, pos, sum_p")
        lo = _num(b["lo"], f"{field}.lo", null=False)
        hi = _num(b["hi"], f"{field}.hi", null=False)
        if abs(float(lo or 0) - edges[i]) > 1e-9 or abs(float(hi or 0) - edges[i + 1]) > 1e-9:
            raise _Problem(f"{field} edges [{lo}, {hi}] are not the equal-width bin {i} of {k}")
        bn = _count(b["n"], f"{field}.n")
        bp = _count(b["pos"], f"{field}.pos", bn)
        _num(b["sum_p"], f"{field}.sum_p", edges[i] * bn, edges[i + 1] * bn, null=False)
        bin_n.append(bn)
        bin_pos.append(bp)
    if sum(bin_n) != n:
        raise _Problem(f"calibration.bins n sum to {sum(bin_n)}, not n = {n}")
    if sum(bin_pos) != positives:
        raise _Problem(f"calibration.bins pos sum to {sum(bin_pos)}, not tp + fn = {positives}")
    _curve(s["curve"], n, positives, bin_n, bin_pos)


def _curve(value: Any, n: int, positives: int, bin_n: list[int], bin_pos: list[int]) -> None:
    curve = _mapping(value, "curve")
    if set(curve) != {"bins", "n", "pos"}:
        raise _Problem("curve must hold exactly bins, n, pos")
    k = _count(curve["bins"], "curve.bins", MAX_CURVE_BINS)
    cn = _list(curve["n"], "curve.n", k, least=k)
    cp = _list(curve["pos"], "curve.pos", k, least=k)
    counts = [_count(v, f"curve.n[{i}]") for i, v in enumerate(cn)]
    pos = [_count(v, f"curve.pos[{i}]", counts[i]) for i, v in enumerate(cp)]
    if sum(counts) != n:
        raise _Problem(f"curve.n sums to {sum(counts)}, not n = {n}")
    if sum(pos) != positives:
        raise _Problem(f"curve.pos sums to {sum(pos)}, not tp + fn = {positives}")
    kb = len(bin_n)
    if k and k % kb == 0:
        merged_n = np.asarray(counts).reshape(kb, -1).sum(axis=1)
        merged_pos = np.asarray(pos).reshape(kb, -1).sum(axis=1)
        if merged_n.tolist() != bin_n or merged_pos.tolist() != bin_pos:
            raise _Problem("curve counts do not merge into the calibration.bins counts")


def _multiclass(s: Mapping[str, Any], n: int) -> None:
    conf = _mapping(s["confusion"], "confusion")
    if set(conf) != {"matrix"}:
        raise _Problem("confusion must hold exactly matrix")
    rows = _list(conf["matrix"], "confusion.matrix", MAX_CLASSES, least=2)
    k = len(rows)
    sums = []
    for i, row in enumerate(rows):
        cells = _list(row, f"confusion.matrix[{i}]", k, least=k)
        sums.append(sum(_count(c, f"confusion.matrix[{i}][{j}]") for j, c in enumerate(cells)))
    if sum(sums) != n:
        raise _Problem(f"confusion.matrix sums to {sum(sums)}, not n = {n}")
    nir = _prob(s["no_information_rate"], "no_information_rate", null=n == 0)
    if n and nir is not None and abs(nir - max(sums) / n) > _TOL:
        raise _Problem(f"no_information_rate {nir} is not the majority share")
    if n == 0:
        if s["prevalence"] is not None:
            raise _Problem("prevalence must be null when n = 0")
        return
    prev = _list(s["prevalence"], "prevalence", k, least=k)
    for i, v in enumerate(prev):
        p = _prob(v, f"prevalence[{i}]", null=False)
        if abs(float(p or 0.0) - sums[i] / n) > _TOL:
            raise _Problem(f"prevalence[{i}] {p} is not the class's share of n")
