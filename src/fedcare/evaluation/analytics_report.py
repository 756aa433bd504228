"""The HTML report of a federated analytics run, from ``AnalyticsResult.to_dict()``.

One section per query: a table (per-site counts with "suppressed" where a site withheld a
cell) and, where it helps, a plotly figure (histograms, Kaplan-Meier curves per site and
federated, a correlation heatmap). plotly.js is inlined once, so the page opens offline.
"""

from __future__ import annotations

import functools
import html
import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import plotly.graph_objects as go
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from fedcare.evaluation.plots import figure_div, number_or_none

__all__ = ["render_analytics_report", "write_analytics_report"]

SUPPRESSED = "suppressed"
_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    "legend": {"orientation": "h", "y": -0.2},
}


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("fedcare.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _fmt(value: Any) -> str:
    if value is None:
        return SUPPRESSED
    number = number_or_none(value)
    if number is None:
        return str(value)
    return f"{number:.0f}" if number == int(number) and abs(number) < 1e15 else f"{number:.4g}"


def _per_site_table(title: str, labels: Sequence[str], q: Mapping[str, Any]) -> dict[str, Any]:
    per_site: Mapping[str, Sequence[Any]] = q.get("per_site", {})
    rows = [[site, *(_fmt(v) for v in values)] for site, values in per_site.items()]
    return {"title": title, "columns": ["site", *labels], "rows": rows}


def _count(q: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    rows = [[site, _fmt(v)] for site, v in q.get("per_site", {}).items()]
    rows.append(["federated (released cells)", _fmt(q.get("count"))])
    return [{"title": "count", "columns": ["site", "count"], "rows": rows}], None


def _moments(q: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    rows = [
        [v, _fmt(n), _fmt(m), _fmt(s)]
        for v, n, m, s in zip(q["variables"], q["count"], q["mean"], q["std"], strict=True)
    ]
    return [{"title": "pooled", "columns": ["variable", "n", "mean", "sd"], "rows": rows}], None


def _bins(q: Mapping[str, Any]) -> list[str]:
    e = q["edges"]
    return [f"[{_fmt(a)}, {_fmt(b)})" for a, b in itertools.pairwise(e)]


def _histogram(q: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    labels = _bins(q)
    table = _per_site_table("bin counts per site", labels, q)
    fed = [
        _fmt(c) if ok else f"≥ {_fmt(c)}" for c, ok in zip(q["counts"], q["complete"], strict=True)
    ]
    table["rows"].append(["federated (≥: some site withheld this bin)", *fed])
    marks = ["" if ok else "incomplete" for ok in q["complete"]]
    fig = go.Figure(go.Bar(x=labels, y=q["counts"], text=marks, name="federated"))
    fig.update_layout(title=html.escape(f"{q['variable']}: federated histogram"), **_LAYOUT)
    return [table], figure_div(fig, f"fig-{q['path']}")


def _quantiles(q: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    rows = [
        [_fmt(p), _fmt(v), _fmt(e)]
        for p, v, e in zip(q["probabilities"], q["quantiles"], q["error_bound"], strict=True)
    ]
    table = {
        "title": q.get("method", ""),
        "columns": ["p", "quantile", "error bound"],
        "rows": rows,
    }
    return [table], None


def _correlation(q: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    names = [html.escape(v) for v in q["variables"]]
    fig = go.Figure(
        go.Heatmap(z=q["correlation"], x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu")
    )
    fig.update_layout(title=f"correlation (n = {_fmt(q['count'])}, listwise)", **_LAYOUT)
    rows = [
        [v, *(_fmt(x) for x in row)]
        for v, row in zip(q["variables"], q["correlation"], strict=True)
    ]
    table = {"title": "correlation", "columns": ["", *q["variables"]], "rows": rows}
    return [table], figure_div(fig, f"fig-{q['path']}")


def _kaplan_meier(q: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    fig = go.Figure()
    for site, curve in q.get("per_site", {}).items():
        fig.add_trace(
            go.Scatter(x=q["per_site_time"], y=curve, name=html.escape(site), line_shape="hv")
        )
    fig.add_trace(
        go.Scatter(
            x=q["time"], y=q["survival"], name="federated", line_shape="hv", line={"width": 3}
        )
    )
    fig.update_layout(title=f"Kaplan-Meier ({q['mode']} mode)", yaxis_range=[0, 1.02], **_LAYOUT)
    tables = []
    if q["mode"] == "grid":
        rows = [
            [_fmt(t), _fmt(s), _fmt(d), _fmt(n), "" if ok else "incomplete"]
            for t, s, d, n, ok in zip(
                q["time"], q["survival"], q["events"], q["at_risk"], q["complete"], strict=True
            )
        ]
        cols = ["time", "survival", "events", "at risk", ""]
        tables.append({"title": "federated", "columns": cols, "rows": rows})
    return tables, figure_div(fig, f"fig-{q['path']}")


_BUILDERS = {
    "count": _count,
    "cohort": _count,
    "moments": _moments,
    "histogram": _histogram,
    "quantiles": _quantiles,
    "correlation": _correlation,
    "kaplan_meier": _kaplan_meier,
}


def _section(q: Mapping[str, Any]) -> dict[str, Any]:
    tables, figure = _BUILDERS[q["type"]](q)
    suppressed = {site: cells for site, cells in q.get("suppressed", {}).items() if cells}
    title = f"{q['name']} ({q['type']})"
    if q.get("filter"):
        title += f": {q['filter']}"
    return {
        "title": title,
        "tables": tables,
        "figure": Markup(figure) if figure else None,
        "suppressed": suppressed,
        "members": [_section(m) for m in q.get("queries", [])],
    }


def render_analytics_report(
    result: Mapping[str, Any], *, generated_at: datetime | None = None
) -> str:
    """A self-contained HTML page for an analytics result dict."""
    when = generated_at or datetime.now(timezone.utc)
    context = {
        "name": result.get("name", "analytics"),
        "sites": result.get("sites", []),
        "failures": result.get("failures", {}),
        "epsilon": result.get("epsilon", {}),
        "min_cell": result.get("min_cell", {}),
        "sections": [_section(q) for q in result.get("queries", [])],
        "generated": when.strftime("%Y-%m-%d %H:%M UTC"),
        "plotlyjs": Markup(get_plotlyjs()),
    }
    return _environment().get_template("analytics_report.html.j2").render(**context)


def write_analytics_report(result: Mapping[str, Any], path: Path) -> Path:
    """Write :func:`render_analytics_report` to ``path``; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_analytics_report(result), encoding="utf-8")
    return path
