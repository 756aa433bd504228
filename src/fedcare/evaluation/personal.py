"""The personalization comparison: each site's global, personal and local model on its own test
rows, and the mean over sites (how FL4Health scores personalized federated learning).

A site reports its personal model's metrics prefixed ``personal_`` beside the global model's
(:mod:`fedcare.site.personal`); this pure function splits them into one block per model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedcare.evaluation.summary import summarize_sites

__all__ = ["PERSONAL_PREFIX", "personalization_summary", "split_personal"]

PERSONAL_PREFIX = "personal_"


def split_personal(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(global metrics, personal metrics)`` of one site's evaluation; both keep ``n``."""
    glob = {k: v for k, v in metrics.items() if not k.startswith(PERSONAL_PREFIX)}
    own = {
        k.removeprefix(PERSONAL_PREFIX): v
        for k, v in metrics.items()
        if k.startswith(PERSONAL_PREFIX)
    }
    if own and "n" in metrics:
        own["n"] = metrics["n"]
    return glob, own


def personalization_summary(
    method: str,
    per_site: Mapping[str, Mapping[str, Any]],
    *,
    local: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Per site and on average: the global, personal and (when given) local model's metrics.

    Parameters
    ----------
    method:
        The study's personalization method (``finetune``, ``ditto``, ``fedbn``).
    per_site:
        The final evaluation's metrics by site: the global model's and ``personal_*``.
    local:
        By site, the site's own local model's metrics on its test rows (simulation baselines).

    Returns
    -------
    dict
        ``{"method", "sites": {site: {"global": {...}, "personal": {...} | None,
        "local": {...}?}}, "mean": {"global": {...}, "personal": {...}, "local": {...}?}}``:
        ``mean`` is the unweighted mean over the sites where each metric is defined (the mean of
        each site's model on its own test rows); ``personal`` is ``None`` at a site that sent
        none (e.g. it never trained under Ditto).
    """
    sites: dict[str, dict[str, Any]] = {}
    by_model: dict[str, dict[str, Mapping[str, Any]]] = {"global": {}, "personal": {}}
    if local is not None:
        by_model["local"] = {}
    for site, metrics in sorted(per_site.items()):
        glob, own = split_personal(metrics)
        entry: dict[str, Any] = {"global": glob, "personal": own or None}
        by_model["global"][site] = glob
        if own:
            by_model["personal"][site] = own
        if local is not None and site in local:
            entry["local"] = dict(local[site])
            by_model["local"][site] = local[site]
        sites[site] = entry
    mean = {
        name: dict(summarize_sites(values)["unweighted"]) if values else {}
        for name, values in by_model.items()
    }
    return {"method": method, "sites": sites, "mean": mean}
