"""``fedcare simulate``'s leave-one-site-out table (``results["leave_one_site_out"]``).

One row per held-out site: its test rows, the study's federated model on it (internal: the
site helped train it), then the models that never saw it (federated and pooled on the other
sites) and its own local model, by the discrimination measure, with the federated
leave-one-site-out model's calibration slope and ECE; then the mean over held-out sites and the
random-effects meta-analysis. Pure formatting: the numbers are :mod:`fedcare.simulation.loso`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.table import Table

__all__ = ["loso_table"]

_MODELS = (("federated", "federated (N-1)"), ("pooled", "pooled (N-1)"), ("local", "local"))


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "–"
    return f"{value:.3f}" if math.isfinite(value) else "–"


def _measure(results: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """``auroc`` when the held-out sites report it, else the study's first metric."""
    measures = summary.get("federated", {}).get("measures", {})
    return "auroc" if "auroc" in measures else str(results["metrics"][0])


def _value(entry: Mapping[str, Any], name: str) -> Any:
    block = (entry.get("metrics") or {}).get(name)
    if isinstance(block, Mapping) and block.get("value") is not None:
        return block["value"]
    return (entry.get("evaluation") or {}).get(name)


def loso_table(results: Mapping[str, Any]) -> Table | None:
    """The table, or ``None`` when the results hold no leave-one-site-out validation."""
    loso = results.get("leave_one_site_out")
    if not isinstance(loso, Mapping) or not loso.get("sites"):
        return None
    summary = loso.get("summary") or {}
    name = _measure(results, summary)
    internal = (results.get("final") or {}).get("per_site") or {}
    table = Table(title=f"leave-one-site-out: {name} on each held-out site's test split")
    table.add_column("held-out site")
    table.add_column("n", justify="right")
    table.add_column("federated (internal)", justify="right")
    for _, label in _MODELS:
        table.add_column(label, justify="right")
    table.add_column("calibration slope", justify="right")
    table.add_column("ECE", justify="right")
    for site, entries in loso["sites"].items():
        fed = entries.get("federated", {})
        calibration = fed.get("calibration") or {}
        n = fed.get("n", (fed.get("evaluation") or {}).get("n"))
        table.add_row(
            site,
            "–" if n is None else str(int(n)),
            _fmt(internal.get(site, {}).get(name)),
            *(_fmt(_value(entries.get(kind, {}), name)) for kind, _ in _MODELS),
            _fmt(calibration.get("slope")),
            _fmt(calibration.get("ece")),
        )
    fed_measures = summary.get("federated", {}).get("measures", {})

    def mean(kind: str, measure: str) -> str:
        return _fmt(summary.get(kind, {}).get("measures", {}).get(measure, {}).get("mean"))

    table.add_row(
        "mean",
        "",
        "",
        *(mean(kind, name) for kind, _ in _MODELS),
        _fmt(fed_measures.get("calibration_slope", {}).get("mean")),
        _fmt(fed_measures.get("ece", {}).get("mean")),
    )
    cells = []
    for kind, _ in _MODELS:
        meta = summary.get(kind, {}).get("meta", {}).get(name) or {}
        random, lo, hi = meta.get("random"), meta.get("lo"), meta.get("hi")
        cells.append("–" if random is None else f"{_fmt(random)} [{_fmt(lo)}, {_fmt(hi)}]")
    if any(c != "–" for c in cells):
        table.add_row("random effects [95% CI]", "", "", *cells, "", "")
    return table
