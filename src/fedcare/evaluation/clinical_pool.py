"""The overall block of a model validation: the sites' summaries combined (pure functions of
checked site summaries; :func:`combine_sites`).

Binary tasks (the thorough case)::

    {"n", "sites", "task", "prevalence", "no_information_rate", "confusion": {tp, fp, tn, fn},
     "metrics": {"auroc": {value, lo, hi, se, method: "delong-binned"},
                 "accuracy" | "sensitivity" | "specificity" | "ppv" | "npv":
                     {value, lo, hi, method: "wilson"},
                 "brier" | "log_loss": {value, method: "pooled"}},
     "calibration": {"bins", "brier", "ece", "curve": {"prob_true", "prob_pred", "n"}},
     "roc": {fpr, tpr, threshold} | None, "pr": {recall, precision, threshold} | None,
     "net_benefit": {thresholds, model, treat_all} | None,
     "meta": {"auroc" | "calibration_slope" | "calibration_intercept": {fixed, random, se, lo,
              hi, tau2, i2, q, pi_lo, pi_hi, k, scale}}}

Everything but the meta-analysis is computed from the sites' counts as if on the pooled rows:
the confusion matrix, reliability bins and score histogram add up (a histogram of ``k`` bins
is merged to the greatest common divisor of the sites' bin counts). "pooled" metrics are exact
(Brier: the row-weighted mean of the sites' Brier scores); the AUROC treats the scores of one
histogram bin as tied; "n-weighted" metrics (macro AUROC, C-index, macro-F1 of multilabel
tasks) are row-weighted means of the sites' values, not the metric of the pooled rows.

The meta-analysis is DerSimonian–Laird across sites (:mod:`fedcare.evaluation.meta`). A site's
AUROC enters on the logit scale with the standard error implied by its bootstrap interval
(``(logit hi - logit lo) / 2z``), or Hanley–McNeil's when it has none; an AUROC of 0 or 1 is
moved to ``(A mn + 1/2) / (mn + 1)`` first. Calibration slope and intercept enter with the
site's standard errors. Other tasks meta-analyse their headline metric (logit scale for
AUROC-like metrics, with the bootstrap standard error).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import norm

from fedcare.evaluation.calibration import curve_from_bins, ece_from_bins
from fedcare.evaluation.curves import (
    auroc_delong,
    net_benefit,
    pr_curve,
    rebin,
    roc_curve,
    wilson_interval,
)
from fedcare.evaluation.meta import dersimonian_laird, hanley_mcneil_se, logit_se, meta_logit

__all__ = ["combine_sites"]

Summary = Mapping[str, Any]


def _z(confidence: float) -> float:
    return float(norm.ppf(0.5 + confidence / 2.0))


def _metric(summary: Summary, name: str) -> Mapping[str, Any]:
    entry = summary.get("metrics", {}).get(name)
    return entry if isinstance(entry, Mapping) else {}


def _wilson(k: int, n: int, confidence: float) -> dict[str, Any]:
    ci = wilson_interval(k, n, confidence)
    return {
        "value": k / n if n else None,
        "lo": ci[0] if ci else None,
        "hi": ci[1] if ci else None,
        "method": "wilson",
    }


def _weighted(sites: Sequence[Summary], name: str, method: str = "n-weighted") -> dict[str, Any]:
    pairs = [(s["n"], _metric(s, name).get("value")) for s in sites]
    pairs = [(n, v) for n, v in pairs if v is not None and n > 0]
    total = sum(n for n, _ in pairs)
    value = sum(n * v for n, v in pairs) / total if total else None
    return {"value": value, "method": method}


def _site_logit_se(summary: Summary, name: str, value: float) -> float | None:
    """The logit-scale standard error a site's bootstrap interval of ``name`` implies: the
    width ``(logit hi - logit lo) / 2z``, or the one half inside ``(0, 1)`` over ``z`` when
    the other bound is 0 or 1 (small sites)."""
    entry = _metric(summary, name)
    lo, hi = entry.get("lo"), entry.get("hi")
    if lo is None or hi is None or not 0.0 < value < 1.0:
        return None
    z = _z(float(summary.get("confidence", 0.95)))
    centre = _logit(value)
    if 0.0 < lo < hi < 1.0:
        return (_logit(hi) - _logit(lo)) / (2.0 * z)
    if 0.0 < lo < value:
        return (centre - _logit(lo)) / z
    if value < hi < 1.0:
        return (_logit(hi) - centre) / z
    return None


def _logit(x: float) -> float:
    return math.log(x / (1.0 - x))


def _meta_probability(sites: Sequence[Summary], name: str, confidence: float) -> dict[str, Any]:
    values, ses = [], []
    for s in sites:
        value = _metric(s, name).get("value")
        se = _site_logit_se(s, name, value) if value is not None else None
        if value is not None and se is not None:
            values.append(value)
            ses.append(se)
    return {**meta_logit(values, ses, confidence), "scale": "logit"}


def _meta_auroc(sites: Sequence[Summary], confidence: float) -> dict[str, Any]:
    values, ses = [], []
    for s in sites:
        value = _metric(s, "auroc").get("value")
        if value is None:
            continue
        conf = s["confusion"]
        m, k = conf["tp"] + conf["fn"], conf["tn"] + conf["fp"]
        if value in (0.0, 1.0):  # a perfect (or inverted) site: shrink off the boundary
            value = (value * m * k + 0.5) / (m * k + 1.0)
            se = None
        else:
            se = _site_logit_se(s, "auroc", value)
        if se is None:
            hm = hanley_mcneil_se(value, m, k)
            se = logit_se(value, hm) if hm is not None else None
        if se is not None:
            values.append(value)
            ses.append(se)
    return {**meta_logit(values, ses, confidence), "scale": "logit"}


def _meta_plain(
    sites: Sequence[Summary], value_key: str, se_key: str, confidence: float
) -> dict[str, Any]:
    values, variances = [], []
    for s in sites:
        cal = s.get("calibration") or {}
        value, se = cal.get(value_key), cal.get(se_key)
        if value is not None and se is not None and se > 0:
            values.append(value)
            variances.append(se * se)
    return {**dersimonian_laird(values, variances, confidence), "scale": "identity"}


def _meta_bootstrap(sites: Sequence[Summary], name: str, confidence: float) -> dict[str, Any]:
    """Meta-analysis of a metric on its own scale, SE = bootstrap interval width / 2z."""
    values, variances = [], []
    for s in sites:
        entry = _metric(s, name)
        value, lo, hi = entry.get("value"), entry.get("lo"), entry.get("hi")
        if value is not None and lo is not None and hi is not None and hi > lo:
            se = (hi - lo) / (2.0 * _z(float(s.get("confidence", 0.95))))
            values.append(value)
            variances.append(se * se)
    return {**dersimonian_laird(values, variances, confidence), "scale": "identity"}


def _pooled_histogram(sites: Sequence[Summary]) -> tuple[list[int], list[int]] | None:
    curves = [s["curve"] for s in sites if isinstance(s.get("curve"), Mapping)]
    if not curves:
        return None
    k = math.gcd(*(int(c["bins"]) for c in curves))
    n = np.sum([rebin(c["n"], k) for c in curves], axis=0)
    pos = np.sum([rebin(c["pos"], k) for c in curves], axis=0)
    return [int(v) for v in n], [int(v) for v in pos]


def _pooled_bins(sites: Sequence[Summary]) -> list[dict[str, Any]]:
    lists = [s["calibration"]["bins"] for s in sites]
    k = math.gcd(*(len(b) for b in lists))
    out = [{"lo": i / k, "hi": (i + 1) / k, "n": 0, "pos": 0, "sum_p": 0.0} for i in range(k)]
    for bins in lists:
        step = len(bins) // k
        for i, b in enumerate(bins):
            cell = out[i // step]
            cell["n"] += int(b["n"])
            cell["pos"] += int(b["pos"])
            cell["sum_p"] += float(b["sum_p"])
    return out


def _binary(sites: Sequence[Summary], confidence: float) -> dict[str, Any]:
    cells = {k: sum(int(s["confusion"][k]) for s in sites) for k in ("tp", "fp", "tn", "fn")}
    tp, fp, tn, fn = cells["tp"], cells["fp"], cells["tn"], cells["fn"]
    n = tp + fp + tn + fn
    positives = tp + fn
    hist = _pooled_histogram(sites)
    auc = auroc_delong(*hist, confidence) if hist else {"value": None, "lo": None, "hi": None}
    metrics: dict[str, Any] = {
        "auroc": {**auc, "method": "delong-binned"},
        "accuracy": _wilson(tp + tn, n, confidence),
        "sensitivity": _wilson(tp, tp + fn, confidence),
        "specificity": _wilson(tn, tn + fp, confidence),
        "ppv": _wilson(tp, tp + fp, confidence),
        "npv": _wilson(tn, tn + fn, confidence),
        "brier": _weighted(sites, "brier", "pooled"),
        "log_loss": _weighted(sites, "log_loss", "pooled"),
    }
    bins = _pooled_bins(sites)
    return {
        "prevalence": positives / n if n else None,
        "no_information_rate": max(positives, n - positives) / n if n else None,
        "confusion": cells,
        "metrics": metrics,
        "calibration": {
            "bins": bins,
            "brier": metrics["brier"]["value"],
            "ece": ece_from_bins(bins),
            "curve": curve_from_bins(bins),
        },
        "roc": roc_curve(*hist) if hist else None,
        "pr": pr_curve(*hist) if hist else None,
        "net_benefit": net_benefit(*hist) if hist else None,
        "meta": {
            "auroc": _meta_auroc(sites, confidence),
            "calibration_slope": _meta_plain(sites, "slope", "slope_se", confidence),
            "calibration_intercept": _meta_plain(sites, "intercept", "intercept_se", confidence),
        },
    }


def _multiclass(sites: Sequence[Summary], confidence: float) -> dict[str, Any]:
    shapes = {len(s["confusion"]["matrix"]) for s in sites}
    k = max(shapes)
    matrix = np.zeros((k, k), dtype=np.int64)
    for s in sites:
        m = np.asarray(s["confusion"]["matrix"], dtype=np.int64)
        matrix[: m.shape[0], : m.shape[1]] += m
    n = int(matrix.sum())
    true, pred, tp = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    present, used = true > 0, (true + pred) > 0
    recall = tp[present] / true[present]
    f1 = 2.0 * tp[used] / (true[used] + pred[used])
    return {
        "prevalence": (true / n).tolist() if n else None,
        "no_information_rate": float(true.max() / n) if n else None,
        "confusion": {"matrix": matrix.tolist()},
        "metrics": {
            "macro_auroc": _weighted(sites, "macro_auroc"),
            "accuracy": _wilson(int(tp.sum()), n, confidence),
            "balanced_accuracy": {
                "value": float(recall.mean()) if recall.size else None,
                "method": "pooled",
            },
            "macro_f1": {"value": float(f1.mean()) if f1.size else None, "method": "pooled"},
            "log_loss": _weighted(sites, "log_loss", "pooled"),
        },
        "meta": {"macro_auroc": _meta_probability(sites, "macro_auroc", confidence)},
    }


def _multilabel(sites: Sequence[Summary], confidence: float) -> dict[str, Any]:
    n = sum(int(s["n"]) for s in sites)
    exact = sum(round(s["n"] * (_metric(s, "subset_accuracy").get("value") or 0.0)) for s in sites)
    return {
        "metrics": {
            "macro_auroc": _weighted(sites, "macro_auroc"),
            "macro_f1": _weighted(sites, "macro_f1"),
            "subset_accuracy": _wilson(int(exact), n, confidence),
            "hamming_accuracy": _weighted(sites, "hamming_accuracy", "pooled"),
        },
        "meta": {"macro_auroc": _meta_probability(sites, "macro_auroc", confidence)},
    }


def _pooled_r2(sites: Sequence[Summary]) -> float | None:
    """R² of the pooled rows from each site's n, RMSE, R² and mean of y."""
    n = sum(int(s["n"]) for s in sites)
    if n < 2:
        return None
    means = [(s["calibration"] or {}).get("mean_y") for s in sites if s["n"] > 0]
    if any(m is None for m in means):
        return None
    grand = sum(s["n"] * s["calibration"]["mean_y"] for s in sites if s["n"] > 0) / n
    ss_res = ss_tot = 0.0
    for s in sites:
        if s["n"] == 0:
            continue
        rmse, r2 = _metric(s, "rmse").get("value"), _metric(s, "r2").get("value")
        if rmse is None:
            return None
        res = s["n"] * rmse * rmse
        if r2 is not None and r2 >= 1.0:
            return None  # a perfect site: its spread of y is not recoverable
        ss_res += res
        ss_tot += (res / (1.0 - r2) if r2 is not None else 0.0) + s["n"] * (
            s["calibration"]["mean_y"] - grand
        ) ** 2
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else None


def _weighted_mean(pairs: Sequence[tuple[int, Any]]) -> float | None:
    kept = [(m, float(v)) for m, v in pairs if v is not None and m > 0]
    total = sum(m for m, _ in kept)
    return sum(m * v for m, v in kept) / total if total else None


def _regression(sites: Sequence[Summary], confidence: float) -> dict[str, Any]:
    mse = _weighted_mean([(s["n"], _square(_metric(s, "rmse").get("value"))) for s in sites])
    return {
        "metrics": {
            "mae": _weighted(sites, "mae", "pooled"),
            "rmse": {"value": math.sqrt(mse) if mse is not None else None, "method": "pooled"},
            "r2": {"value": _pooled_r2(sites), "method": "pooled"},
        },
        "calibration": {
            key: _weighted_mean([(s["n"], (s["calibration"] or {}).get(key)) for s in sites])
            for key in ("mean_pred", "mean_y")
        },
        "meta": {"mae": _meta_bootstrap(sites, "mae", confidence)},
    }


def _square(value: Any) -> float | None:
    return None if value is None else float(value) ** 2


def _survival(sites: Sequence[Summary], confidence: float) -> dict[str, Any]:
    return {
        "metrics": {"cindex": _weighted(sites, "cindex")},
        "meta": {"cindex": _meta_probability(sites, "cindex", confidence)},
    }


_BY_TASK = {
    "binary": _binary,
    "multiclass": _multiclass,
    "multilabel": _multilabel,
    "regression": _regression,
    "survival": _survival,
}


def combine_sites(
    per_site: Mapping[str, Mapping[str, Any]], spec: Mapping[str, Any]
) -> dict[str, Any]:
    """The overall block (module docstring) of the sites' summaries, each already accepted by
    :func:`fedcare.evaluation.clinical.summary_problem`. Sites whose task differs from the
    first site's are left out (counted in ``"sites_skipped"``). ``{}`` without sites."""
    if not per_site:
        return {}
    confidence = float(spec.get("confidence", 0.95))
    task = next(iter(per_site.values())).get("task")
    sites = [s for s in per_site.values() if s.get("task") == task]
    out: dict[str, Any] = {
        "task": task,
        "n": sum(int(s["n"]) for s in sites),
        "sites": len(sites),
        "sites_skipped": len(per_site) - len(sites),
    }
    combine = _BY_TASK.get(str(task))
    if combine is not None:
        out.update(combine(sites, confidence))
    return out
