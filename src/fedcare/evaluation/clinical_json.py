"""A flat JSON companion of the clinical validation: the headline numbers with their intervals.

:func:`clinical_summary` condenses ``results["validation"]`` and
``results["leave_one_site_out"]`` (shapes in :mod:`fedcare.evaluation.validation`) into one
small dict that a script or a spreadsheet reads without knowing the nested shapes::

    {"version": 1,
     "models": {label: {"overall": ROW, "sites": {site: ROW}}},
     "leave_one_site_out": {held_out_site: {"federated" | "pooled" | "local": ROW}}}

    ROW = {"n", "prevalence", "no_information_rate", "accuracy_at_or_below_nir",
           "<metric>", "<metric>_lo", "<metric>_hi", ...,      # the task's metrics
           "ece", "calibration_slope", "calibration_slope_lo", "calibration_slope_hi",
           "calibration_intercept", ...}

Interval bounds are ``null`` where there is none. A site's calibration slope and intercept
intervals are normal (± z·SE); overall ones are the random-effects meta-analysis across sites.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedcare.evaluation.clinical_format import nir_flag, se_ci
from fedcare.evaluation.plots import number_or_none

__all__ = ["SUMMARY_VERSION", "clinical_summary"]

SUMMARY_VERSION = 1


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _put(row: dict[str, Any], name: str, entry: Mapping[str, Any]) -> None:
    row[name] = number_or_none(entry.get("value"))
    row[f"{name}_lo"] = number_or_none(entry.get("lo"))
    row[f"{name}_hi"] = number_or_none(entry.get("hi"))


def _row(summary: Mapping[str, Any], *, overall: bool) -> dict[str, Any]:
    prevalence = summary.get("prevalence")
    row: dict[str, Any] = {
        "n": summary.get("n") if isinstance(summary.get("n"), int) else None,
        "prevalence": number_or_none(prevalence),
        "no_information_rate": number_or_none(summary.get("no_information_rate")),
        "accuracy_at_or_below_nir": nir_flag("", summary) is not None,
    }
    for name, entry in sorted(_map(summary.get("metrics")).items()):
        _put(row, str(name), _map(entry))
    cal = _map(summary.get("calibration"))
    row["ece"] = number_or_none(cal.get("ece"))
    meta = _map(summary.get("meta"))
    for name, key in (("calibration_slope", "slope"), ("calibration_intercept", "intercept")):
        if overall:
            m = _map(meta.get(name))
            _put(row, name, {"value": m.get("random"), "lo": m.get("lo"), "hi": m.get("hi")})
        else:
            _put(row, name, se_ci(cal.get(key), cal.get(f"{key}_se")))
    return row


def clinical_summary(results: Mapping[str, Any]) -> dict[str, Any]:
    """The flat summary (module docstring) of a results dict; ``models`` and
    ``leave_one_site_out`` are empty when the results hold no clinical validation."""
    models = {
        str(label): {
            "overall": _row(_map(_map(v).get("overall")), overall=True),
            "sites": {
                str(site): _row(_map(s), overall=False)
                for site, s in _map(_map(v).get("per_site")).items()
            },
        }
        for label, v in _map(results.get("validation")).items()
    }
    loso = {
        str(site): {str(kind): _row(_map(e), overall=False) for kind, e in _map(entry).items()}
        for site, entry in _map(_map(results.get("leave_one_site_out")).get("sites")).items()
    }
    return {"version": SUMMARY_VERSION, "models": models, "leave_one_site_out": loso}
