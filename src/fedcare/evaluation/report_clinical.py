"""The clinical validation sections of the HTML report (issue 15), from ``results["validation"]``
(model label -> model validation, see :mod:`fedcare.evaluation.validation`) and
``results["leave_one_site_out"]``.

:func:`clinical_context` turns them into plain rows for ``templates/clinical.html.j2``;
:func:`clinical_figures` builds the plotly figures (:mod:`fedcare.evaluation.plots_clinical`).
Both read defensively: any key may be missing or ``null`` (a placeholder or an older fedcare
wrote the results), and a section without data is left out. Numbers and intervals are
formatted by :mod:`fedcare.evaluation.clinical_format` (``"0.81 (0.70–0.90)"``), which also
words the flag of an accuracy at or below the no-information rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

import fedcare.evaluation.plots as plots
import fedcare.evaluation.plots_clinical as cplots
from fedcare.evaluation.clinical_format import (
    fmt_ci,
    fmt_number,
    meta_ci,
    meta_pi,
    nir_flag,
    se_ci,
)
from fedcare.evaluation.plots import number_or_none

__all__ = ["MODEL_ORDER", "clinical_context", "clinical_figures"]

#: Metric columns in this order, then any other metric a site reports.
METRIC_ORDER = (
    "auroc",
    "accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "brier",
    "macro_auroc",
    "balanced_accuracy",
    "macro_f1",
    "subset_accuracy",
    "hamming_accuracy",
    "rmse",
    "mae",
    "r2",
    "cindex",
)
#: Model labels first in this order, then the local models.
MODEL_ORDER = ("federated", "pooled")
_SKIPPED = ("log_loss",)
_COUNTS = ("pos", "tp", "fp", "tn", "fn")
_SUBGROUP_METRICS = ("prevalence", "tpr", "fpr", "ppv", "auroc", "calibration_in_the_large")


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _metric_columns(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    seen = {str(k) for s in summaries for k in _map(s.get("metrics")) if k not in _SKIPPED}
    return [m for m in METRIC_ORDER if m in seen] + sorted(seen - set(METRIC_ORDER))


def _prevalence(value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return " / ".join(fmt_number(number_or_none(v), 2) for v in value)
    return fmt_number(number_or_none(value))


def _site_row(name: str, s: Mapping[str, Any], columns: Sequence[str], model: str) -> dict:
    metrics = _map(s.get("metrics"))
    conf = _map(s.get("confusion"))
    flag = nir_flag(name, s, model)
    return {
        "name": name,
        "n": s.get("n"),
        "prevalence": _prevalence(s.get("prevalence")),
        "nir": fmt_number(number_or_none(s.get("no_information_rate"))),
        "below_nir": flag is not None,
        "flag": flag,
        "cells": [fmt_ci(metrics.get(c)) for c in columns],
        "confusion": {k: conf.get(k) for k in ("tp", "fn", "fp", "tn")}
        if any(k in conf for k in ("tp", "fn", "fp", "tn"))
        else None,
        "matrix": conf.get("matrix") if isinstance(conf.get("matrix"), list) else None,
    }


def _calibration_rows(
    per_site: Mapping[str, Any], overall: Mapping[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    for site, s in per_site.items():
        cal = _map(_map(s).get("calibration"))
        if not cal:
            continue
        rows.append(
            {
                "name": site,
                "brier": fmt_ci(_map(_map(s).get("metrics")).get("brier", cal.get("brier"))),
                "ece": fmt_number(number_or_none(cal.get("ece"))),
                "slope": fmt_ci(se_ci(cal.get("slope"), cal.get("slope_se"))),
                "intercept": fmt_ci(se_ci(cal.get("intercept"), cal.get("intercept_se"))),
                "aggregate": False,
            }
        )
    meta = _map(overall.get("meta"))
    cal = _map(overall.get("calibration"))
    if rows and (cal or meta):
        rows.append(
            {
                "name": "overall (pooled rows; slope/intercept: random-effects meta-analysis)",
                "brier": fmt_number(number_or_none(cal.get("brier"))),
                "ece": fmt_number(number_or_none(cal.get("ece"))),
                "slope": meta_ci(meta.get("calibration_slope")),
                "intercept": meta_ci(meta.get("calibration_intercept")),
                "aggregate": True,
            }
        )
    return rows


def _meta_rows(overall: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, m in _map(overall.get("meta")).items():
        m = _map(m)
        if number_or_none(m.get("random")) is None and number_or_none(m.get("fixed")) is None:
            continue
        rows.append(
            {
                "name": str(name),
                "random": meta_ci(m),
                "fixed": fmt_number(number_or_none(m.get("fixed"))),
                "pi": meta_pi(m),
                "tau2": fmt_number(number_or_none(m.get("tau2")), 4),
                "i2": "–"
                if number_or_none(m.get("i2")) is None
                else f"{100 * float(m['i2']):.0f}%",
                "k": m.get("k"),
            }
        )
    return rows


def _subgroups(block: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per subgroup: level rows (suppressed cells as ``"< min_cell"``) and fairness gaps."""
    min_cell = block.get("min_cell")
    hidden = f"< {min_cell}" if isinstance(min_cell, int) and min_cell > 0 else "suppressed"
    out = []
    for name, group in _map(block.get("groups")).items():
        group = _map(group)
        levels = _map(group.get("levels"))
        order = [str(v) for v in group.get("order") or levels if str(v) in levels]
        rows = []
        for level in order:
            cell = _map(levels[level])
            metrics = _map(cell.get("metrics"))
            suppressed = bool(cell.get("suppressed")) or cell.get("n") is None
            # a rate is undefined ("–") or rests on a withheld count ("withheld")
            withheld = any(k in cell and cell[k] is None for k in _COUNTS)
            rows.append(
                {
                    "level": level,
                    "suppressed": suppressed,
                    "n": hidden if suppressed else cell.get("n"),
                    # a withheld count may be >= min_cell (withheld so that a small one cannot be
                    # derived by subtraction): "withheld", not "< min_cell"
                    "events": "withheld"
                    if "pos" in cell and cell["pos"] is None
                    else cell.get("pos"),
                    "cells": [
                        fmt_number(v)
                        if (v := number_or_none(metrics.get(k))) is not None
                        else "withheld"
                        if withheld
                        else "–"
                        for k in _SUBGROUP_METRICS
                    ],
                    "value": fmt_number(number_or_none(cell.get("value"))),
                    "sites": cell.get("sites"),
                    "sites_suppressed": cell.get("sites_suppressed") or 0,
                }
            )
        gaps = [(str(k), fmt_number(number_or_none(v))) for k, v in _map(group.get("gaps")).items()]
        out.append(
            {
                "name": str(name),
                "feature": group.get("feature"),
                "rows": rows,
                "gaps": gaps,
                "hidden": hidden,
                "min_cell": str(min_cell) if isinstance(min_cell, int) else "min_cell",
            }
        )
    return out


def _coefficients(block: Mapping[str, Any]) -> dict[str, Any] | None:
    rows = [r for r in block.get("rows") or [] if isinstance(r, Mapping)]
    if not rows and not block.get("note"):
        return None
    return {
        "ratio_name": str(block.get("ratio_name") or "ratio"),
        "scale_note": block.get("scale_note"),
        "note": block.get("note"),
        "rows": [
            {
                "name": r.get("name"),
                "coef": fmt_ci({"value": r.get("coef"), "lo": r.get("lo"), "hi": r.get("hi")}),
                "se": fmt_number(number_or_none(r.get("se"))),
                "ratio": fmt_ci(
                    {"value": r.get("ratio"), "lo": r.get("ratio_lo"), "hi": r.get("ratio_hi")}
                ),
                "p": fmt_number(number_or_none(r.get("p")), 4),
            }
            for r in rows
        ],
    }


def _model_section(label: str, validation: Mapping[str, Any]) -> dict[str, Any] | None:
    per_site = {str(s): _map(v) for s, v in _map(validation.get("per_site")).items()}
    overall = _map(validation.get("overall"))
    if not per_site and not overall:
        return None
    columns = _metric_columns([*per_site.values(), overall])
    rows = [_site_row(s, v, columns, label) for s, v in per_site.items()]
    if overall:
        rows.append({**_site_row("overall (pooled)", overall, columns, label), "aggregate": True})
    first = next(iter(per_site.values()), overall)
    return {
        "label": label,
        "columns": columns,
        "rows": rows,
        "flags": [r["flag"] for r in rows if r["flag"]],
        "threshold": first.get("threshold"),
        "confidence": first.get("confidence"),
        "bootstrap": first.get("bootstrap"),
        "calibration": _calibration_rows(per_site, overall),
        "meta": _meta_rows(overall),
        "subgroups": _subgroups(_map(validation.get("subgroups"))),
        "coefficients": _coefficients(_map(validation.get("coefficients"))),
        "importance": _map(validation.get("importance")).get("metric"),
    }


def _ordered(validation: Mapping[str, Any]) -> list[str]:
    labels = [str(k) for k in validation]
    return [m for m in MODEL_ORDER if m in labels] + [m for m in labels if m not in MODEL_ORDER]


def _comparison(validation: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for label in _ordered(validation):
        overall = _map(_map(validation[label]).get("overall"))
        if not overall:
            continue
        metrics, meta = _map(overall.get("metrics")), _map(overall.get("meta"))
        rows.append(
            {
                "label": label,
                "n": overall.get("n"),
                "auroc": fmt_ci(metrics.get("auroc")),
                "auroc_meta": meta_ci(meta.get("auroc")),
                "accuracy": fmt_ci(metrics.get("accuracy")),
                "nir": fmt_number(number_or_none(overall.get("no_information_rate"))),
                "below_nir": nir_flag(label, overall) is not None,
                "brier": fmt_number(number_or_none(_map(metrics.get("brier")).get("value"))),
                "ece": fmt_number(number_or_none(_map(overall.get("calibration")).get("ece"))),
                "slope": meta_ci(meta.get("calibration_slope")),
            }
        )
    return rows if len(rows) > 1 else []


def _loso_cell(entry: Mapping[str, Any]) -> dict[str, Any]:
    metrics, cal = _map(entry.get("metrics")), _map(entry.get("calibration"))
    evaluation = _map(entry.get("evaluation"))

    def pick(name: str) -> str:
        return (
            fmt_ci(metrics[name])
            if name in metrics
            else fmt_number(number_or_none(evaluation.get(name)))
        )

    return {
        "failed": entry.get("failed"),
        "auroc": pick("auroc"),
        "accuracy": pick("accuracy"),
        "nir": fmt_number(number_or_none(entry.get("no_information_rate"))),
        "below_nir": nir_flag("", entry) is not None,
        "ece": fmt_number(number_or_none(cal.get("ece"))),
        "slope": fmt_ci(se_ci(cal.get("slope"), cal.get("slope_se"))),
        "trained_on": ", ".join(str(s) for s in entry.get("trained_on") or []),
    }


def _loso(loso: Mapping[str, Any]) -> dict[str, Any] | None:
    sites = _map(loso.get("sites"))
    if not sites:
        return None
    kinds = ("federated", "pooled", "local")
    rows: list[dict[str, Any]] = []
    for site, entry in sites.items():
        models = {k: _map(_map(entry).get(k)) for k in kinds if _map(entry).get(k)}
        n = next((m.get("n") for m in models.values() if isinstance(m.get("n"), int)), None)
        rows.append(
            {"site": str(site), "n": n, "models": {k: _loso_cell(m) for k, m in models.items()}}
        )
    flags = [
        f"held-out {r['site']}, {kind} model: accuracy is not above the no-information rate "
        f"({cell['accuracy']} vs {cell['nir']})"
        for r in rows
        for kind, cell in r["models"].items()
        if cell["below_nir"]
    ]
    summary = []
    for kind, model in _map(loso.get("summary")).items():
        measures = _map(_map(model).get("measures"))
        cells = {}
        for name in ("auroc", "accuracy", "ece", "calibration_slope"):
            m = _map(measures.get(name))
            cells[name] = fmt_ci({"value": m.get("mean"), "lo": m.get("min"), "hi": m.get("max")})
        summary.append(
            {
                "kind": str(kind),
                "cells": cells,
                "meta": meta_ci(_map(_map(model).get("meta")).get("auroc")),
                "pi": meta_pi(_map(_map(model).get("meta")).get("auroc")),
            }
        )
    return {
        "rows": rows,
        "kinds": [k for k in kinds if any(k in r["models"] for r in rows)],
        "flags": flags,
        "summary": summary,
    }


def clinical_context(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """Everything ``clinical.html.j2`` shows, or ``None`` when the results hold no clinical
    validation and no leave-one-site-out block."""
    validation = _map(results.get("validation"))
    models = [
        section
        for label in _ordered(validation)
        if (section := _model_section(label, _map(validation[label]))) is not None
    ]
    loso = _loso(_map(results.get("leave_one_site_out")))
    if not models and loso is None:
        return None
    return {"models": models, "comparison": _comparison(validation), "loso": loso}


def clinical_figures(results: Mapping[str, Any]) -> dict[str, Markup]:
    """The figures (HTML ``<div>`` with its script) that have data, by name: ``roc_pr``,
    ``reliability``, ``net_benefit``, ``forest`` and ``importance`` of the first model
    (``federated`` when present) and ``loso`` (the leave-one-site-out comparison)."""
    validation = _map(results.get("validation"))
    labels = _ordered(validation)
    v = _map(validation[labels[0]]) if labels else {}
    loso = _map(results.get("leave_one_site_out"))
    figures = {
        "roc_pr": cplots.roc_pr_curves(v) if v else None,
        "reliability": cplots.reliability_diagram(v) if v else None,
        "net_benefit": cplots.net_benefit_plot(v) if v else None,
        "forest": cplots.forest_plot(v) if v else None,
        "importance": cplots.importance_bars(_map(v.get("importance"))) if v else None,
        "loso": cplots.loso_plot(loso) if loso else None,
    }
    return {
        name: Markup(plots.figure_div(fig, f"fig-clinical-{name.replace('_', '-')}"))
        for name, fig in figures.items()
        if fig is not None
    }
