"""A self-contained HTML report of a study's results.

:func:`render_report` turns the plain results dict that ``fedcare simulate`` writes as
``results.json`` into one HTML page that opens offline: plotly.js is embedded inline once and
each figure is a ``<div>`` with its own small inline script. All text goes through Jinja2
autoescaping. Sections whose data is absent (baselines, cross-site matrix, EXAM summary, round
measurements, model card) are left out.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from plotly.offline import get_plotlyjs

import fedcare.evaluation.plots as plots
from fedcare.errors import DataError
from fedcare.evaluation.clinical_format import METRIC_LABELS, ci_html
from fedcare.evaluation.report_clinical import clinical_context, clinical_figures
from fedcare.evaluation.report_personal import personalization_view
from fedcare.evaluation.report_timing import site_timing_table
from fedcare.evaluation.tripod import tripod_view
from fedcare.records.invalid_rows import InvalidRows, invalid_rows_by_site

__all__ = ["render_report", "write_report"]

_HEADER_KEYS = ("name", "dataset", "strategy", "rounds", "seed")


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fedcare.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _fmt_number
    env.filters["pct"] = _fmt_percent
    env.filters["value"] = _fmt_value
    env.filters["pairs"] = lambda value: list(_mapping(value).items())
    env.filters["ci"] = ci_html
    env.filters["metric_label"] = lambda name: METRIC_LABELS.get(str(name), str(name))
    return env


def _fmt_number(value: Any, digits: int = 3) -> str:
    """Numbers for tables: integers as such, floats to ``digits`` places, else "–"."""
    v = plots.number_or_none(value)
    if v is None:
        return "–"
    return f"{int(value)}" if isinstance(value, int) else f"{v:.{digits}f}"


def _fmt_percent(value: Any) -> str:
    v = plots.number_or_none(value)
    return "–" if v is None else f"{100 * v:+.1f}%"


def _fmt_value(value: Any) -> str:
    """Any config value as short text: scalars as they are, the rest as JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    if value is None or isinstance(value, (str, int, float, bool)):
        return str(value)
    return json.dumps(value, sort_keys=True, default=str)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _metric_columns(results: Mapping[str, Any], per_site: Mapping[str, Any]) -> list[str]:
    """Declared metrics first, then any other metric found at a site, then ``"n"``."""
    columns = [str(m) for m in results.get("metrics", [])]
    for values in per_site.values():
        columns.extend(k for k in _mapping(values) if k != "n" and k not in columns)
    return [*columns, "n"]


def _primary_metric(results: Mapping[str, Any]) -> str:
    metrics = results.get("metrics") or []
    if metrics:
        return str(metrics[0])
    weighted = _mapping(_mapping(results.get("final")).get("weighted"))
    return next((k for k in weighted if k not in ("n", "loss")), "")


def _sites(results: Mapping[str, Any]) -> list[str]:
    sites = results.get("sites")
    if sites:
        return [str(s) for s in sites]
    return [str(s) for s in _mapping(_mapping(results.get("final")).get("per_site"))]


def _header(results: Mapping[str, Any]) -> dict[str, Any]:
    study = _mapping(results.get("study"))
    sizes = _mapping(results.get("site_sizes"))
    return {
        "title": str(study.get("name") or "fedcare study"),
        # a failed deployment study says so above everything else (``fedcare study report``)
        "failure": (study.get("reason") or "no reason recorded")
        if study.get("status") == "failed"
        else None,
        "items": [(k, study[k]) for k in _HEADER_KEYS if k in study]
        + [("privacy mode", _mapping(study.get("privacy")).get("mode", "open"))]
        + _epsilon_items(_mapping(results.get("privacy"))),
        "task": results.get("task"),
        "metrics": [str(m) for m in results.get("metrics", [])],
        "config": [(str(k), v) for k, v in study.items() if k not in _HEADER_KEYS],
        "dataset": _mapping(results.get("dataset")),
        "sites": [
            (s, _mapping(sizes.get(s)).get("train"), _mapping(sizes.get(s)).get("test"))
            for s in _sites(results)
        ],
        # rows a site left out under the study's skip_invalid_rows (counts by reason)
        "invalid_rows": _invalid_rows(results),
    }


def _invalid_rows(results: Mapping[str, Any]) -> list[str]:
    """One line per site that left out invalid rows: from the round records (a deployed
    study's replies), else from the simulated dataset's counts."""
    found = invalid_rows_by_site([_mapping(h) for h in results.get("history", [])])
    if not found:
        counts = _mapping(_mapping(results.get("dataset")).get("invalid_rows"))
        with contextlib.suppress(DataError):
            found = {str(s): InvalidRows.from_dict(c) for s, c in sorted(counts.items())}
    return [invalid.sentence(site) for site, invalid in found.items()]


def _epsilon_items(privacy: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The study's epsilon spent and its budget (``results["privacy"]``), when there is DP."""
    spent, budget = privacy.get("study_epsilon"), privacy.get("budget")
    if not privacy or (spent is None and budget is None):
        return []
    text = "n/a" if spent is None else f"{spent:.3g}"
    if budget is not None:
        text += f" of budget {budget:g}"
    return [(f"epsilon spent (delta {privacy.get('delta', 0):g})", text)]


def _final_table(results: Mapping[str, Any]) -> dict[str, Any] | None:
    final = _mapping(results.get("final"))
    per_site = _mapping(final.get("per_site"))
    if not final:
        return None
    columns = _metric_columns(results, per_site)
    rows = [(s, [_mapping(per_site.get(s)).get(c) for c in columns], False) for s in per_site]
    for kind in ("weighted", "unweighted"):
        if kind in final:
            rows.append((kind, [_mapping(final[kind]).get(c) for c in columns], True))
    return {"columns": columns, "rows": rows}


def _model_results(results: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``{model: {"per_site", "weighted", ...}}`` for the federated model and baselines."""
    models: dict[str, Mapping[str, Any]] = {}
    if "final" in results:
        models["federated"] = _mapping(results["final"])
    baselines = _mapping(results.get("baselines"))
    for site, res in _mapping(baselines.get("local")).items():
        models[f"local-{site}"] = _mapping(res)
    if "pooled" in baselines:
        models["pooled"] = _mapping(baselines["pooled"])
    return models


def _models_table(results: Mapping[str, Any]) -> dict[str, Any] | None:
    models = _model_results(results)
    if len(models) < 2:
        return None
    metrics = [c for c in _metric_columns(results, {}) if c != "n"]
    columns = [(m, kind) for m in metrics for kind in ("weighted", "unweighted")]
    rows = [
        (name, [_mapping(res.get(kind)).get(m) for m, kind in columns])
        for name, res in models.items()
    ]
    return {"columns": columns, "rows": rows}


def _cell(row: Any, j: int) -> Any:
    return row[j] if isinstance(row, Sequence) and j < len(row) else None


def _comparison(results: Mapping[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """``(metric, {site: {"federated", "local", "pooled"}})`` on each site's own test data."""
    cross = _mapping(results.get("cross_site"))
    if cross.get("models") and cross.get("matrix"):
        index = {str(m): row for m, row in zip(cross["models"], cross["matrix"], strict=False)}
        out: dict[str, dict[str, Any]] = {}
        for j, site in enumerate(str(s) for s in cross.get("sites", [])):
            names = {"federated": "federated", "local": f"local-{site}", "pooled": "pooled"}
            out[site] = {k: _cell(index[m], j) for k, m in names.items() if m in index}
        return str(cross.get("metric", "")), out
    metric = _primary_metric(results)
    models = _model_results(results)
    out = {}
    for site in _sites(results):
        names = {"federated": "federated", "local": f"local-{site}", "pooled": "pooled"}
        out[site] = {
            k: _mapping(_mapping(models[m].get("per_site")).get(site)).get(metric)
            for k, m in names.items()
            if m in models
        }
    return metric, out


def _rounds_table(history: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Rounds by numeric measurements: ``duration_s`` and every scalar in ``fit``."""
    columns: list[str] = []
    if any("duration_s" in h for h in history):
        columns.append("duration_s")
    for h in history:
        fit = _mapping(h.get("fit"))
        columns.extend(
            k for k, v in fit.items() if plots.number_or_none(v) is not None and k not in columns
        )
    if not history or not columns:
        return None
    rows = [
        (
            h.get("round", i + 1),
            [h.get(c) if c == "duration_s" else _mapping(h.get("fit")).get(c) for c in columns],
        )
        for i, h in enumerate(history)
    ]
    return {"columns": columns, "rows": rows}


def _figures(results: Mapping[str, Any]) -> list[tuple[str, str, Markup]]:
    """``(div id, section title, HTML)`` of each figure that has data."""
    sites = _sites(results)
    primary = _primary_metric(results)
    history = [_mapping(h) for h in results.get("history", [])]
    metric, comparison = _comparison(results)
    cross = _mapping(results.get("cross_site"))
    candidates = [
        (
            "fig-learning-curves",
            "Learning curves",
            plots.learning_curves(history, sites, _curve_metrics(primary)),
        ),
        (
            "fig-comparison",
            f"Federated vs the site's own local model vs pooled ({metric}, site's test data)",
            plots.comparison_bars(comparison, metric),
        ),
        (
            "fig-cross-site",
            f"Cross-site generalizability ({cross.get('metric', '')})",
            plots.cross_site_heatmap(cross) if cross else None,
        ),
    ]
    return [
        (div_id, title, Markup(plots.figure_div(fig, div_id)))
        for div_id, title, fig in candidates
        if fig is not None
    ]


def _curve_metrics(primary: str) -> list[str]:
    """The learning curves' metrics: the primary one, AUROC beside accuracy, and the loss."""
    metrics = [primary] if primary else []
    if primary != "auroc":
        metrics.append("auroc")  # left out by the plot when no round measured it
    return [*metrics, "loss"]


def _package_line(package: Mapping[str, Any]) -> str | None:
    if not package:
        return None
    return f"{package.get('name')} {package.get('version')} ({package.get('package')})"


def _model_card(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The "Model card" section: identity, privacy, one row per participating site, the JSON."""
    card = _mapping(results.get("model_card"))
    if not card:
        return None
    model, privacy = _mapping(card.get("model")), _mapping(card.get("privacy"))
    epsilon = _mapping(privacy.get("epsilon_spent"))
    local = _mapping(privacy.get("local_epsilon_spent"))
    rows = [
        {
            "site": site,
            "fingerprints": list(_mapping(entry).get("dataset_fingerprints") or []),
            "num_rows": list(_mapping(entry).get("num_rows") or []),
            "approvals": list(_mapping(entry).get("approval_ids") or []),
            "plan_hashes": list(_mapping(entry).get("plan_hashes") or []),
            "rounds": len(_mapping(entry).get("rounds") or []),
            "epsilon": epsilon.get(site),
            "local_epsilon": local.get(site),
        }
        for site, entry in _mapping(card.get("sites")).items()
    ]
    items = [
        ("version", model.get("version")),
        ("parent", model.get("parent")),
        ("model hash", model.get("hash")),
        ("study package", _package_line(_mapping(model.get("package")))),
        ("plan hash", card.get("plan_hash")),
        ("privacy mode", privacy.get("mode")),
        ("created", card.get("created")),
    ]
    return {
        "items": items,
        "privacy_note": privacy.get("note"),
        "local_dp": bool(local),
        "sites": rows,
        "not_participating": list(_mapping(card.get("not_participating")).items()),
        "json": json.dumps(card, indent=2, sort_keys=True, allow_nan=False, default=str),
    }


def _version(results: Mapping[str, Any]) -> str:
    if results.get("fedcare_version"):
        return str(results["fedcare_version"])
    try:
        return metadata.version("fedcare")
    except metadata.PackageNotFoundError:
        return "unknown"


def render_report(results: Mapping[str, Any], *, generated_at: datetime | None = None) -> str:
    """The HTML report of a study's results, as one self-contained page.

    Parameters
    ----------
    results:
        The results dict (as written to ``results.json``); only what is present is shown.
    generated_at:
        Time printed in the footer; the current UTC time when ``None``.

    Returns
    -------
    str
        A complete HTML document with plotly.js inlined once; it needs no network.
    """
    when = generated_at or datetime.now(timezone.utc)
    clinical = clinical_context(results)
    context = {
        "header": _header(results),
        "final": _final_table(results),
        "models": _models_table(results),
        "figures": _figures(results),
        "summary": _mapping(results.get("summary")),
        "rounds": _rounds_table([_mapping(h) for h in results.get("history", [])]),
        "site_timing": site_timing_table([_mapping(h) for h in results.get("history", [])]),
        "membership": _mapping(results.get("membership_inference")),  # attack AUROCs
        "personal": personalization_view(results),
        "card": _model_card(results),
        "tripod": tripod_view(_mapping(_mapping(results.get("model_card")).get("tripod"))),
        "clinical": clinical,
        "clinical_figures": clinical_figures(results) if clinical else {},
        "version": _version(results),
        "generated_at": when.isoformat(timespec="seconds"),
        "total_s": _mapping(results.get("timing")).get("total_s"),
        "plotlyjs": Markup(get_plotlyjs()),
    }
    return _environment().get_template("report.html.j2").render(**context)


def write_report(
    results: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    generated_at: datetime | None = None,
) -> Path:
    """Render the report and write it (UTF-8) to ``path``, creating parent folders.

    Returns
    -------
    Path
        The path written.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(results, generated_at=generated_at), encoding="utf-8")
    return out
