"""Small cells withheld from what a site's monitoring summary reports.

A count ``0 < c < min_cell`` is never reported (``None``), nor anything it could be derived
from together with what is reported:

* the whole performance block when the matched rows, or their positives or negatives, are
  fewer than ``min_cell`` (prevalence times ``n`` would give them);
* a confusion cell with its partner of the same class (``tp``/``fn`` sum to the positives,
  ``tn``/``fp`` to the negatives), and every metric computed from a withheld cell (accuracy,
  sensitivity, specificity, PPV, NPV);
* a reliability bin with a small ``n``, positives or negatives, and then a second bin when it
  is the only one withheld (totals are known);
* the score histogram (``curve``), which monitoring does not need.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["shown", "withhold_summary"]

_PARTNER = {"tp": "fn", "fn": "tp", "tn": "fp", "fp": "tn"}
_USES = {
    "accuracy": {"tp", "fn", "tn", "fp"},
    "sensitivity": {"tp", "fn"},
    "specificity": {"tn", "fp"},
    "ppv": {"tp", "fp"},
    "npv": {"tn", "fn"},
}


def shown(count: int | None, min_cell: int) -> int | None:
    """``count``, or ``None`` when ``0 < count < min_cell``."""
    return None if count is None or 0 < count < min_cell else int(count)


def _small(count: Any, min_cell: int) -> bool:
    return isinstance(count, (int, float)) and 0 < count < min_cell


def _bins(bins: list[dict[str, Any]], min_cell: int) -> list[str]:
    hidden = [
        i
        for i, b in enumerate(bins)
        if any(_small(c, min_cell) for c in (b["n"], b["pos"], b["n"] - b["pos"]))
    ]
    if len(hidden) == 1:  # one withheld bin is the total minus the others: withhold another
        others = [i for i, b in enumerate(bins) if b["n"] > 0 and i not in hidden]
        if others:
            hidden.append(min(others, key=lambda i: bins[i]["n"]))
    for i in hidden:
        bins[i].update(n=None, pos=None, sum_p=None)
    return [f"calibration.bins[{i}]" for i in sorted(hidden)]


def withhold_summary(summary: Mapping[str, Any], min_cell: int) -> dict[str, Any] | None:
    """A copy of a :func:`fedcare.evaluation.clinical.site_summary` with small cells withheld
    (module docstring) and ``withheld`` listing them; ``None`` when nothing can be reported."""
    n = int(summary.get("n") or 0)
    if min_cell > 1 and 0 < n < min_cell:
        return None
    out = copy.deepcopy(dict(summary))
    out.pop("curve", None)
    withheld: list[str] = []
    confusion = out.get("confusion")
    if isinstance(confusion, dict) and set(confusion) == set(_PARTNER) and min_cell > 1:
        positives, negatives = confusion["tp"] + confusion["fn"], confusion["tn"] + confusion["fp"]
        if _small(positives, min_cell) or _small(negatives, min_cell):
            return None
        small = {k for k, v in confusion.items() if _small(v, min_cell)}
        small |= {_PARTNER[k] for k in small}
        for key in sorted(small):
            confusion[key] = None
            withheld.append(f"confusion.{key}")
        for name, uses in _USES.items():
            if uses & small and name in out.get("metrics", {}):
                out["metrics"][name] = {"value": None, "lo": None, "hi": None}
                withheld.append(f"metrics.{name}")
    calibration = out.get("calibration")
    if isinstance(calibration, dict) and isinstance(calibration.get("bins"), list) and min_cell > 1:
        withheld += _bins(calibration["bins"], min_cell)
    out["withheld"] = withheld
    return out
