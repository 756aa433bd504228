"""The report's personalization section: each site's global, personal and local model on the
site's own test rows, and the mean over sites (``results["personalization"]``, built by
:func:`fedcare.evaluation.personal.personalization_summary`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["personalization_view"]

_MODELS = ("global", "personal", "local")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def personalization_view(results: Mapping[str, Any]) -> dict[str, Any]:
    """``{"method", "metrics", "models", "rows": [(site, n, [[value per metric] per model])],
    "mean": [[...] per model]}``, or ``{}`` without a personalization block."""
    block = _mapping(results.get("personalization"))
    sites = _mapping(block.get("sites"))
    if not sites:
        return {}
    models = [m for m in _MODELS if any(_mapping(s).get(m) for s in sites.values())]
    declared = [str(m) for m in results.get("metrics") or []]
    found: list[str] = []
    for entry in sites.values():
        for model in models:
            found.extend(k for k in _mapping(_mapping(entry).get(model)) if k not in found)
    metrics = [m for m in declared if m in found] or [m for m in found if m not in ("n", "loss")]
    rows = []
    for site, entry in sorted(sites.items()):
        values = [
            [_mapping(_mapping(entry).get(model)).get(metric) for metric in metrics]
            for model in models
        ]
        n = _mapping(_mapping(entry).get("global")).get("n")
        rows.append((site, int(n) if isinstance(n, int | float) else None, values))
    mean = _mapping(block.get("mean"))
    return {
        "method": str(block.get("method", "")),
        "metrics": metrics,
        "models": models,
        "rows": rows,
        "mean": [[_mapping(mean.get(model)).get(metric) for metric in metrics] for model in models],
    }
