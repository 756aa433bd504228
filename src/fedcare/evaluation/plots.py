"""Plotly figures of the HTML report, built from the plain results dict.

Every builder returns ``None`` when its data is absent, so the report simply leaves the
section out. Text shown inside a figure (site and model names) is HTML-escaped, because
plotly.js reads a subset of HTML tags in labels; plotly already escapes ``<``, ``>`` and ``/``
in the JSON it writes into the page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "comparison_bars",
    "cross_site_heatmap",
    "figure_div",
    "learning_curves",
    "number_or_none",
]

_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_MEAN_COLOUR = "#111111"
_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    "legend": {"orientation": "h", "y": -0.2},
}


def number_or_none(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is missing, not a number or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _label(text: Any) -> str:
    return html.escape(str(text), quote=False)


def _evaluated_rounds(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [h for h in history if isinstance(h.get("evaluate"), Mapping)]


def _series(
    rounds: Sequence[Mapping[str, Any]], site: str | None, metric: str
) -> list[float | None]:
    """``metric`` per round for one site, or for the weighted mean when ``site`` is None."""
    out = []
    for h in rounds:
        ev = h["evaluate"]
        values = ev.get("weighted") if site is None else _map(ev.get("per_site")).get(site)
        out.append(number_or_none(_map(values).get(metric)))
    return out


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def learning_curves(
    history: Sequence[Mapping[str, Any]], sites: Sequence[str], metrics: Sequence[str]
) -> go.Figure | None:
    """Per-site curves of each metric over rounds, plus the weighted mean (dashed, black).

    One subplot per metric in ``metrics`` that has at least one value (typically the primary
    metric and ``"loss"``); ``None`` when no round was evaluated or no metric has values.
    """
    rounds = _evaluated_rounds(history)
    x = [h.get("round", i + 1) for i, h in enumerate(rounds)]
    shown = [m for m in metrics if any(v is not None for v in _all_values(rounds, sites, m))]
    if not rounds or not shown:
        return None
    fig = make_subplots(rows=1, cols=len(shown), subplot_titles=[_label(m) for m in shown])
    for col, metric in enumerate(shown, start=1):
        for i, site in enumerate(sites):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=_series(rounds, site, metric),
                    mode="lines+markers",
                    name=_label(site),
                    legendgroup=_label(site),
                    showlegend=col == 1,
                    line={"color": _PALETTE[i % len(_PALETTE)], "width": 1.5},
                    marker={"size": 4},
                ),
                row=1,
                col=col,
            )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_series(rounds, None, metric),
                mode="lines",
                name="weighted mean",
                legendgroup="weighted mean",
                showlegend=col == 1,
                line={"color": _MEAN_COLOUR, "width": 3, "dash": "dash"},
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="round", row=1, col=col)
    fig.update_layout(**_LAYOUT, height=420)
    return fig


def _all_values(
    rounds: Sequence[Mapping[str, Any]], sites: Sequence[str], metric: str
) -> list[float | None]:
    values = _series(rounds, None, metric)
    for site in sites:
        values.extend(_series(rounds, site, metric))
    return values


def comparison_bars(
    comparison: Mapping[str, Mapping[str, float | None]], metric: str
) -> go.Figure | None:
    """Grouped bars: for each site, the value of each model kind on that site's test data.

    Parameters
    ----------
    comparison:
        ``{site: {kind: value}}`` with kinds such as ``"federated"``, ``"local"`` (the site's
        own local model) and ``"pooled"``; a kind missing at a site leaves a gap.
    metric:
        Axis title.
    """
    sites = list(comparison)
    kinds: list[str] = []
    for values in comparison.values():
        kinds.extend(k for k in values if k not in kinds)
    if not sites or len(kinds) < 2:
        return None
    fig = go.Figure()
    for i, kind in enumerate(kinds):
        y = [number_or_none(comparison[s].get(kind)) for s in sites]
        fig.add_bar(
            x=[_label(s) for s in sites],
            y=y,
            name=_label(kind),
            marker_color=_PALETTE[i % len(_PALETTE)],
            text=[f"{v:.3f}" if v is not None else "–" for v in y],
            textposition="outside",
        )
    fig.update_layout(**_LAYOUT, barmode="group", height=420, yaxis_title=_label(metric))
    return fig


def cross_site_heatmap(cross_site: Mapping[str, Any]) -> go.Figure | None:
    """Heat map of a cross-site matrix: models (rows) by test sites (columns), annotated."""
    models = [str(m) for m in cross_site.get("models", [])]
    sites = [str(s) for s in cross_site.get("sites", [])]
    matrix = cross_site.get("matrix", [])
    if not models or not sites or len(matrix) != len(models):
        return None
    z = [[number_or_none(v) for v in row] for row in matrix]
    text = [["–" if v is None else f"{v:.3f}" for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[_label(s) for s in sites],
            y=[_label(m) for m in models],
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            colorbar={"title": {"text": _label(cross_site.get("metric", ""))}},
            hovertemplate="model %{y}<br>site %{x}<br>%{text}<extra></extra>",
        )
    )
    fig.update_layout(
        **_LAYOUT,
        height=max(300, 60 + 40 * len(models)),
        xaxis_title="test data of site",
        yaxis={"title": "model", "autorange": "reversed"},
    )
    return fig


def figure_div(fig: go.Figure, div_id: str) -> str:
    """The figure as an HTML ``<div>`` plus its inline script, without plotly.js itself."""
    html_text: str = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )
    return html_text
