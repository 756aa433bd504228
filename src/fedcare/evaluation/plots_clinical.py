"""Plotly figures of the report's clinical validation section (issue 15).

Built from one model validation (``results["validation"][label]``: ``per_site`` and
``overall``, shapes in :mod:`fedcare.evaluation.validation`) or from
``results["leave_one_site_out"]``. Every builder returns ``None`` when its data is absent or
malformed, so the report leaves the figure out; labels go through :func:`plots._label`
(HTML-escaped, as plotly.js reads a subset of HTML in text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fedcare.evaluation.plots import _LAYOUT, _MEAN_COLOUR, _PALETTE, _label, number_or_none

__all__ = [
    "forest_plot",
    "importance_bars",
    "loso_plot",
    "net_benefit_plot",
    "reliability_diagram",
    "roc_pr_curves",
]

_GREY = "#999999"


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _numbers(value: Any) -> list[float | None]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    return [number_or_none(v) for v in value]


def _pair(curve: Any, xkey: str, ykey: str) -> tuple[list[float | None], list[float | None]]:
    c = _map(curve)
    x, y = _numbers(c.get(xkey)), _numbers(c.get(ykey))
    return (x, y) if x and len(x) == len(y) else ([], [])


def _sites(validation: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(str(s), _map(v)) for s, v in _map(validation.get("per_site")).items()]


def roc_pr_curves(validation: Mapping[str, Any]) -> go.Figure | None:
    """ROC (with the chance diagonal) and precision-recall curves: every site thin, the pooled
    (overall) curve thick black; from the binned curves the coordinator derived."""
    overall = _map(validation.get("overall"))
    series = [(s, v.get("roc"), v.get("pr"), i) for i, (s, v) in enumerate(_sites(validation))]
    series.append(("overall (pooled)", overall.get("roc"), overall.get("pr"), -1))
    drawn = False
    fig = make_subplots(rows=1, cols=2, subplot_titles=["ROC curve", "Precision-recall curve"])
    for name, roc, pr, i in series:
        line = (
            {"color": _MEAN_COLOUR, "width": 3}
            if i < 0
            else {
                "color": _PALETTE[i % len(_PALETTE)],
                "width": 1.5,
            }
        )
        for col, (x, y) in enumerate(
            (_pair(roc, "fpr", "tpr"), _pair(pr, "recall", "precision")), start=1
        ):
            if not x:
                continue
            drawn = True
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    name=_label(name),
                    legendgroup=_label(name),
                    showlegend=col == 1 or not _pair(roc, "fpr", "tpr")[0],
                    line={**line, "shape": "linear"},
                ),
                row=1,
                col=col,
            )
    if not drawn:
        return None
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"color": _GREY, "dash": "dot"}
        ),
        row=1,
        col=1,
    )
    fig.update_xaxes(title_text="1 − specificity (FPR)", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="sensitivity (TPR)", range=[0, 1.02], row=1, col=1)
    fig.update_xaxes(title_text="recall (sensitivity)", range=[0, 1], row=1, col=2)
    fig.update_yaxes(title_text="precision (PPV)", range=[0, 1.02], row=1, col=2)
    fig.update_layout(**_LAYOUT, height=440)
    return fig


def _bin_points(bins: Any) -> tuple[list[float], list[float], list[int]]:
    """Mean predicted probability, observed frequency and rows of each non-empty bin."""
    xs: list[float] = []
    ys: list[float] = []
    ns: list[int] = []
    for b in bins if isinstance(bins, Sequence) and not isinstance(bins, str) else []:
        n, pos, sum_p = (number_or_none(_map(b).get(k)) for k in ("n", "pos", "sum_p"))
        if n and n > 0 and pos is not None and sum_p is not None:
            xs.append(sum_p / n)
            ys.append(pos / n)
            ns.append(int(n))
    return xs, ys, ns


def reliability_diagram(validation: Mapping[str, Any]) -> go.Figure | None:
    """Observed frequency against mean predicted probability per bin (empty bins dropped),
    pooled and per site, with the diagonal of perfect calibration; hover shows the rows."""
    fig = go.Figure()
    drawn = False
    sites = _sites(validation)
    overall = _map(_map(validation.get("overall")).get("calibration"))
    entries = [
        (s, _bin_points(_map(v.get("calibration")).get("bins")), i)
        for i, (s, v) in enumerate(sites)
    ]
    entries.append(("overall (pooled)", _bin_points(overall.get("bins")), -1))
    for name, (xs, ys, ns), i in entries:
        if not xs:
            continue
        drawn = True
        colour = _MEAN_COLOUR if i < 0 else _PALETTE[i % len(_PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                name=_label(name),
                line={"color": colour, "width": 3 if i < 0 else 1.2},
                marker={"size": 8 if i < 0 else 5},
                customdata=ns,
                hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>rows %{customdata}"
                "<extra>" + _label(name) + "</extra>",
            )
        )
    if not drawn:
        return None
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfect calibration",
            line={"color": _GREY, "dash": "dot"},
        )
    )
    fig.update_layout(
        **_LAYOUT,
        height=460,
        xaxis={"title": "mean predicted probability", "range": [0, 1]},
        yaxis={"title": "observed frequency", "range": [0, 1.02]},
    )
    return fig


def net_benefit_plot(validation: Mapping[str, Any]) -> go.Figure | None:
    """Decision curve of the pooled rows: the model, treat all and treat none (net benefit 0)."""
    nb = _map(_map(validation.get("overall")).get("net_benefit"))
    t = _numbers(nb.get("thresholds"))
    model, treat_all = _numbers(nb.get("model")), _numbers(nb.get("treat_all"))
    if not t or len(model) != len(t):
        return None
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=t, y=model, mode="lines", name="model", line={"color": _PALETTE[0], "width": 3}
        )
    )
    if len(treat_all) == len(t):
        fig.add_trace(
            go.Scatter(
                x=t,
                y=treat_all,
                mode="lines",
                name="treat all",
                line={"color": _PALETTE[3], "width": 1.5},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 0],
            mode="lines",
            name="treat none",
            line={"color": _GREY, "width": 1.5, "dash": "dash"},
        )
    )
    top = max([v for v in model + treat_all if v is not None] or [0.1])
    fig.update_layout(
        **_LAYOUT,
        height=420,
        xaxis={"title": "threshold probability", "range": [0, 1]},
        yaxis={"title": "net benefit", "range": [-0.05, max(0.05, 1.1 * top)]},
    )
    return fig


def _interval(entry: Any) -> tuple[float | None, float | None, float | None]:
    e = _map(entry)
    return tuple(number_or_none(e.get(k)) for k in ("value", "lo", "hi"))  # type: ignore[return-value]


def forest_plot(validation: Mapping[str, Any], metric: str = "auroc") -> go.Figure | None:
    """Each site's ``metric`` with its bootstrap CI, and the random-effects summary (diamond
    over its CI) with the prediction interval for a new site, from ``overall["meta"]``."""
    rows = []
    for site, summary in _sites(validation):
        value, lo, hi = _interval(_map(summary.get("metrics")).get(metric))
        if value is not None:
            rows.append((site, value, lo, hi, summary.get("n")))
    if not rows:
        return None
    meta = _map(_map(_map(validation.get("overall")).get("meta")).get(metric))
    labels = [_label(f"{s} (n={n})" if isinstance(n, int) else s) for s, *_, n in rows]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[v for _, v, *_ in rows],
            y=labels,
            mode="markers",
            name="site estimate (CI)",
            marker={"symbol": "square", "size": 10, "color": _PALETTE[0]},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [(h - v) if h is not None else 0 for _, v, _, h, _ in rows],
                "arrayminus": [(v - lo) if lo is not None else 0 for _, v, lo, _, _ in rows],
                "color": _PALETTE[0],
            },
        )
    )
    _add_summary(fig, meta)
    fig.update_layout(
        **_LAYOUT,
        height=160 + 45 * (len(rows) + 1),
        xaxis={"title": "AUROC" if metric == "auroc" else _label(metric)},
        yaxis={"autorange": "reversed", "type": "category"},
    )
    return fig


def _add_summary(fig: go.Figure, meta: Mapping[str, Any]) -> None:
    """The random-effects diamond (and prediction interval) as the last row, when estimable."""
    mu, lo, hi = (number_or_none(meta.get(k)) for k in ("random", "lo", "hi"))
    if mu is None or lo is None or hi is None:
        return
    label = f"random effects (k={meta.get('k')})"
    pi_lo, pi_hi = number_or_none(meta.get("pi_lo")), number_or_none(meta.get("pi_hi"))
    if pi_lo is not None and pi_hi is not None:
        fig.add_trace(
            go.Scatter(
                x=[pi_lo, pi_hi],
                y=[label, label],
                mode="lines",
                name="prediction interval (new site)",
                line={"color": _PALETTE[3], "width": 2},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[lo, mu, hi, mu, lo],
            y=[label] * 5,
            mode="lines",
            fill="toself",
            name="summary (random effects, CI)",
            line={"color": _MEAN_COLOUR, "width": 9},
            fillcolor=_MEAN_COLOUR,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[mu],
            y=[label],
            mode="markers",
            showlegend=False,
            marker={"symbol": "diamond", "size": 18, "color": _MEAN_COLOUR},
        )
    )


def importance_bars(importance: Mapping[str, Any], top: int = 20) -> go.Figure | None:
    """Horizontal bars of the federated permutation importance (mean metric drop, n-weighted
    over sites) with the between-site SD as error bars; the ``top`` largest drops."""
    rows = [r for r in importance.get("rows") or [] if isinstance(r, Mapping)]
    rows = [r for r in rows if number_or_none(r.get("drop")) is not None][:top]
    if not rows:
        return None
    sd = [number_or_none(r.get("sd_between_sites")) or 0.0 for r in rows]
    fig = go.Figure(
        go.Bar(
            x=[number_or_none(r.get("drop")) for r in rows],
            y=[_label(r.get("feature")) for r in rows],
            orientation="h",
            marker_color=_PALETTE[0],
            error_x={"type": "data", "array": sd, "color": _GREY},
            name="mean drop",
        )
    )
    fig.update_layout(
        **_LAYOUT,
        height=120 + 26 * len(rows),
        xaxis={"title": f"drop in {_label(importance.get('metric', 'metric'))} when permuted"},
        yaxis={"autorange": "reversed", "type": "category"},
    )
    return fig


def loso_plot(loso: Mapping[str, Any], metric: str = "auroc") -> go.Figure | None:
    """Leave-one-site-out: each held-out site's ``metric`` (CI) for the federated (N−1), pooled
    (N−1) and the site's own local model, side by side."""
    sites = [(str(s), _map(v)) for s, v in _map(loso.get("sites")).items()]
    fig = go.Figure()
    drawn = False
    for i, kind in enumerate(("federated", "pooled", "local")):
        points = []
        for site, entry in sites:
            model = _map(entry.get(kind))
            value, lo, hi = _interval(_map(model.get("metrics")).get(metric))
            if value is None:
                value = number_or_none(_map(model.get("evaluation")).get(metric))
            if value is not None:
                points.append((site, value, lo, hi))
        if not points:
            continue
        drawn = True
        fig.add_trace(
            go.Scatter(
                x=[_label(s) for s, *_ in points],
                y=[v for _, v, _, _ in points],
                mode="markers",
                name=kind,
                marker={"size": 10, "color": _PALETTE[i]},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [(h - v) if h is not None else 0 for _, v, _, h in points],
                    "arrayminus": [(v - lo) if lo is not None else 0 for _, v, lo, _ in points],
                },
            )
        )
    if not drawn:
        return None
    fig.update_layout(
        **_LAYOUT,
        height=420,
        scattermode="group",
        xaxis={"title": "held-out site", "type": "category"},
        yaxis={"title": "AUROC" if metric == "auroc" else _label(metric)},
    )
    return fig
