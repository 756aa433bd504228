"""Numbers and intervals as the clinical validation report writes them, and the flag for an
accuracy at or below the no-information rate (shared by :mod:`fedcare.evaluation.report_clinical`
and :mod:`fedcare.evaluation.clinical_json`).

The no-information rate (NIR) is the accuracy of always predicting the majority class; an
accuracy at or below it means the model does no better than that constant guess, and the
report says so in words wherever it happens (:func:`nir_flag`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

__all__ = [
    "METRIC_LABELS",
    "ci_html",
    "fmt_ci",
    "fmt_number",
    "meta_ci",
    "meta_pi",
    "nir_flag",
    "se_ci",
]

#: Column headings of the metrics.
METRIC_LABELS = {
    "auroc": "AUROC",
    "ppv": "PPV",
    "npv": "NPV",
    "brier": "Brier",
    "macro_auroc": "macro AUROC",
    "macro_f1": "macro F1",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
    "cindex": "C-index",
}


def number_or_none(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is missing, not a number or not finite (as
    :func:`fedcare.evaluation.plots.number_or_none`, without importing plotly)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def fmt_number(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` places, ``"–"`` when undefined."""
    return "–" if value is None else f"{value:.{digits}f}"


def fmt_ci(entry: Any, digits: int = 3) -> str:
    """``{"value", "lo", "hi"}`` as ``"0.812 (0.655–1.000)"``; the value alone without an
    interval; ``"–"`` when undefined. A bare number is formatted as a value."""
    if not isinstance(entry, Mapping):
        return fmt_number(number_or_none(entry), digits)
    value, lo, hi = (number_or_none(entry.get(k)) for k in ("value", "lo", "hi"))
    if value is None:
        return "–"
    if lo is None or hi is None:
        return fmt_number(value, digits)
    return f"{value:.{digits}f} ({_range(lo, hi, digits)})"


def _range(lo: float, hi: float, digits: int = 3) -> str:
    """``"0.70–0.90"``; ``"-0.31 to 0.39"`` when a bound is negative (a dash would read as a
    minus sign)."""
    sep = " to " if lo < 0 or hi < 0 else "–"
    return f"{lo:.{digits}f}{sep}{hi:.{digits}f}"


def ci_html(text: str) -> Markup:
    """A formatted interval ``"v (lo–hi)"`` as the value with the interval on a second,
    smaller line (escaped)."""
    value, _, interval = str(text).partition(" ")
    if not interval:
        return Markup.escape(value)
    return Markup('{}<br><span class="ci">{}</span>').format(value, interval)


def se_ci(value: Any, se: Any, z: float = 1.959964) -> dict[str, float | None]:
    """``{"value", "lo", "hi"}`` of an estimate with its standard error (normal interval)."""
    v, s = number_or_none(value), number_or_none(se)
    if v is None or s is None:
        return {"value": v, "lo": None, "hi": None}
    return {"value": v, "lo": v - z * s, "hi": v + z * s}


def _positives(summary: Mapping[str, Any]) -> int | None:
    conf = _map(summary.get("confusion"))
    if all(isinstance(conf.get(k), int) for k in ("tp", "fn")):
        return int(conf["tp"]) + int(conf["fn"])
    n, prev = summary.get("n"), number_or_none(summary.get("prevalence"))
    return round(n * prev) if isinstance(n, int) and prev is not None else None


def nir_flag(where: str, summary: Mapping[str, Any], model: str = "") -> str | None:
    """A sentence when the accuracy of ``summary`` is at or below its no-information rate,
    else ``None`` (also when either is undefined)."""
    acc = number_or_none(_map(_map(summary.get("metrics")).get("accuracy")).get("value"))
    nir = number_or_none(summary.get("no_information_rate"))
    if acc is None or nir is None or acc > nir + 1e-12:
        return None
    who = f"the {model} model" if model else "the model"
    prev, n, pos = number_or_none(summary.get("prevalence")), summary.get("n"), _positives(summary)
    if prev is not None and isinstance(n, int):
        majority = "the outcome (positive)" if prev >= 0.5 else "no outcome (negative)"
        count = pos if prev >= 0.5 else (n - pos if pos is not None else None)
        share = f" ({count} of {n})" if count is not None else ""
        guess = f"always predicting {majority}{share}"
    else:
        guess = "always predicting the majority class"
    verb = "is worse than" if acc < nir - 1e-12 else "is no better than"
    return (
        f"{where}: accuracy {acc:.3f} {verb} the no-information rate {nir:.3f}: "
        f"{who} {verb} {guess}."
    )


def meta_ci(meta: Any) -> str:
    """A meta-analysis block's random-effects estimate with its interval."""
    m = _map(meta)
    return fmt_ci({"value": m.get("random"), "lo": m.get("lo"), "hi": m.get("hi")})


def meta_pi(meta: Any) -> str:
    """A meta-analysis block's prediction interval for a new site, ``"–"`` when absent."""
    m = _map(meta)
    lo, hi = number_or_none(m.get("pi_lo")), number_or_none(m.get("pi_hi"))
    return "–" if lo is None or hi is None else _range(lo, hi)
