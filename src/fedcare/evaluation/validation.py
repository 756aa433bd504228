"""The clinical validation summary: what a site computes, what the coordinator accepts and how
the sites' summaries combine (issue 15).

A study's ``validation`` section (:mod:`fedcare.records.validation_spec`) travels in the
training plan. On the final model's evaluation (the task of round ``plan["rounds"]``) each site
calls :func:`site_validation` on its test rows and sends the resulting *site summary* as JSON in
the reply's ``info["validation"]``; only aggregates are in it (counts, sums, interval bounds,
information matrices), each computed over the site's rows:

* :mod:`fedcare.evaluation.clinical`: prevalence, no-information rate, confusion matrix,
  metrics with bootstrap intervals, calibration bins and score counts;
* :mod:`fedcare.evaluation.subgroups`: the same counts per subgroup, cells under the site's
  ``min_cell`` withheld;
* :mod:`fedcare.evaluation.explain`: the information matrix of a linear model and permutation
  importance.

The coordinator checks a received summary with :func:`validation_problem` (a site that sends a
malformed or inconsistent one has its evaluation reply rejected, named in ``failed_sites``) and
:func:`combine_validation` turns the accepted ones into the report's model validation: per site,
overall (pooled counts, meta-analysis across sites), subgroups, coefficients and importance.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ConfigError, FedcareError, ValidationError
from fedcare.evaluation import clinical, explain, subgroups
from fedcare.evaluation.extras_checks import extras_problem
from fedcare.records.arrays import ArrayRecord

__all__ = [
    "MAX_SUMMARY_BYTES",
    "combine_validation",
    "site_validation",
    "validation_due",
    "validation_problem",
]

#: The largest site summary the coordinator reads (JSON bytes).
MAX_SUMMARY_BYTES = 1_000_000


def validation_due(plan: Mapping[str, Any], round: int) -> bool:
    """Whether an evaluate task of ``round`` under ``plan`` returns a site summary: the plan has
    a validation section and this is the final model's evaluation."""
    spec = plan.get("validation")
    return isinstance(spec, Mapping) and bool(spec.get("report")) and round == plan.get("rounds")


def site_validation(
    task: str,
    data: Dataset,
    scores: np.ndarray,
    *,
    raw_X: np.ndarray,
    feature_names: Sequence[str],
    spec: Mapping[str, Any],
    min_cell: int,
    rng: np.random.Generator,
    predict: Callable[[np.ndarray], np.ndarray] | None = None,
    model: Mapping[str, Any] | None = None,
    params: ArrayRecord | None = None,
) -> dict[str, Any]:
    """One site's summary of the final model on its (preprocessed) test rows ``data``.

    ``scores`` are the model's outputs on ``data.X``; ``raw_X`` the same rows before imputation
    and scaling (subgroups are defined on raw values); ``predict`` scores other rows (permutation
    importance); ``model`` and ``params`` the model spec and parameters (linear models'
    information matrix).
    """
    summary = clinical.site_summary(task, data.y, scores, time=data.time, spec=spec, rng=rng)
    notes: list[str] = []
    tabular = data.X.ndim == 2
    names = list(feature_names)
    if tabular and len(names) != data.X.shape[1]:  # unnamed columns: by position
        names = [f"x{i}" for i in range(data.X.shape[1])]
    parts: dict[str, Callable[[], dict[str, Any] | None]] = {}
    specs = list(spec.get("subgroups") or [])
    if specs and raw_X.ndim == 2:
        parts["subgroups"] = lambda: _subgroups(
            task, data, scores, raw_X, feature_names, spec, min_cell
        )
    if model is not None and params is not None and tabular:
        parts["information"] = lambda: explain.site_information(
            model, params, data.X, data.y, time=data.time, feature_names=names, min_cell=min_cell
        )
    if spec.get("importance") and predict is not None and tabular:
        parts["importance"] = lambda: explain.site_importance(
            predict,
            data.X,
            data.y,
            task,
            time=data.time,
            feature_names=names,
            repeats=int(spec.get("importance_repeats", 5)),
            rng=rng,
        )
    for key, compute in parts.items():
        try:
            value = compute()
        except FedcareError as err:  # an optional part fails alone: the metrics still go back
            notes.append(f"{key} not computed: {err}"[:500])
            continue
        if value is not None:
            summary[key] = value
    if notes:
        summary["notes"] = notes
    return summary


def _subgroups(
    task: str,
    data: Dataset,
    scores: np.ndarray,
    raw_X: np.ndarray,
    feature_names: Sequence[str],
    spec: Mapping[str, Any],
    min_cell: int,
) -> dict[str, Any] | None:
    """The subgroup table of the site's test rows (raw feature values define the groups)."""
    specs = list(spec.get("subgroups") or [])
    groups = subgroups.group_labels(raw_X, feature_names, specs)
    return subgroups.subgroup_summary(
        task,
        data.y,
        scores,
        groups,
        threshold=float(spec.get("threshold", 0.5)),
        bins=int(spec.get("bins", 10)),
        min_cell=min_cell,
        time=data.time,
        features={str(g.get("name") or g["feature"]): str(g["feature"]) for g in specs},
    )


def validation_problem(
    site: str, text: str, *, max_rows: int | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """``(summary, None)`` for an acceptable site summary (JSON ``text``), else
    ``(None, reason)`` naming the site and the problem."""
    if len(text.encode()) > MAX_SUMMARY_BYTES:
        return None, f"site {site!r} validation summary is over {MAX_SUMMARY_BYTES} bytes"
    try:
        summary = json.loads(text, parse_constant=_no_constant)
    except ValueError as err:
        return None, f"site {site!r} validation summary is not JSON: {err}"
    if not isinstance(summary, dict):
        return None, f"site {site!r} validation summary is not an object"
    n = summary.get("n")
    if max_rows is not None and isinstance(n, int) and n > max_rows:
        return None, (
            f"site {site!r} validation summary counts {n} rows, more than the {max_rows} test "
            "rows it declared"
        )
    reason = clinical.summary_problem(summary) or extras_problem(summary)
    if reason is not None:
        return None, f"site {site!r} validation summary: {reason}"
    return summary, None


def _whole(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def combine_validation(
    per_site: Mapping[str, Mapping[str, Any]],
    spec: Mapping[str, Any],
    *,
    params: ArrayRecord | None = None,
    model: Mapping[str, Any] | None = None,
    feature_names: Sequence[str] = (),
    min_cell: int = 0,
) -> dict[str, Any]:
    """The report's validation of one model from its sites' summaries (see the module
    docstring); ``{}`` when no site sent one."""
    if not per_site:
        return {}
    sites = dict(sorted(per_site.items()))
    out: dict[str, Any] = {
        "per_site": {s: {**v, **clinical.site_curves(v)} for s, v in sites.items()},
        "overall": clinical.combine_sites(sites, spec),
    }
    groups = {s: v["subgroups"] for s, v in sites.items() if isinstance(v.get("subgroups"), dict)}
    if groups:  # combined cells are withheld under the strictest site's min_cell too
        floor = max([min_cell, *(_whole(g.get("min_cell")) for g in groups.values())])
        out["subgroups"] = subgroups.combine_subgroups(groups, min_cell=floor)
    infos = [v["information"] for v in sites.values() if isinstance(v.get("information"), dict)]
    if infos and params is not None and model is not None:
        try:
            total = explain.sum_information(infos)
        except ValidationError as err:  # sites disagree on the model's parameters
            out["coefficients"] = {"note": f"no coefficient table: {err}"}
        else:
            if total is not None and total.get("matrix") is not None:
                names = list(feature_names) or [
                    str(n) for n in total.get("names") or [] if n != "bias"
                ]
                try:
                    out["coefficients"] = explain.coefficient_table(
                        total,
                        params,
                        names,
                        model,
                        confidence=float(spec.get("confidence", 0.95)),
                    )
                except (ConfigError, ValidationError) as err:
                    out["coefficients"] = {"note": f"no coefficient table: {err}"}
    importance = {
        s: v["importance"] for s, v in sites.items() if isinstance(v.get("importance"), dict)
    }
    if importance:
        out["importance"] = explain.combine_importance(importance)
    return out
