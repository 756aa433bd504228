"""Train and evaluate one benchmark method with the library: no round loop of its own.

A method is a strategy name (the federated model over all sites), ``local-<site>`` (one site
alone) or ``pooled`` (every site's training rows in one place, which only a simulation on
public data may do). Each is trained by :func:`fedcare.simulation.run.train_on_grid`, exactly as
``fedcare simulate`` trains its federated model and baselines, and evaluated by the sites'
own code (:func:`fedcare.strategy.loop.evaluate_on_sites`) on every site's test split.

:func:`validation_split` makes a dataset for tuning: each site's test split is replaced by a
stratified share of its own training rows, so hyper-parameters are chosen without looking at
any test row.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import TrainedModel, train_on_grid
from fedcare.site.app import SiteApp
from fedcare.strategy.driver import round_config
from fedcare.strategy.loop import evaluate_on_sites
from fedcare.transport.inmemory import InMemoryGrid

__all__ = [
    "MethodRun",
    "evaluate_model",
    "merge",
    "run_method",
    "site_grid",
    "union_site",
    "validation_split",
]

#: Keys merged one level deep when a method overrides a base study (others are replaced).
_NESTED = ("training", "model", "preprocessing", "baselines")


def merge(base: Mapping[str, Any], *overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the study dict ``base`` with ``overrides`` applied in order.

    ``training``, ``model``, ``preprocessing`` and ``baselines`` are merged key by key; every
    other key (``strategy``, ``rounds``, ...) is replaced whole.
    """
    out = copy.deepcopy(dict(base))
    for over in overrides:
        for key, value in over.items():
            if key in _NESTED and isinstance(value, Mapping):
                out[key] = {**out.get(key, {}), **copy.deepcopy(dict(value))}
            else:
                out[key] = copy.deepcopy(value)
    return out


def site_grid(sites: Sequence[SiteData]) -> InMemoryGrid:
    """An in-memory grid with one site app (the real site code) per site."""
    return InMemoryGrid({s.site_id: SiteApp(s) for s in sites})


@dataclass(frozen=True)
class MethodRun:
    """One trained method at one seed: per-site test metrics, and extra evaluations."""

    method: str
    seed: int
    per_site: dict[str, dict[str, float]]
    extra: dict[str, dict[str, float]] = field(default_factory=dict)


def evaluate_model(
    sites: Sequence[SiteData], study: StudyConfig, model: TrainedModel
) -> dict[str, dict[str, float]]:
    """Metrics of ``model`` on each site's test split, computed by the sites' own code.

    Raises
    ------
    RuntimeError
        If any site fails to evaluate (a benchmark must never silently drop a site).
    """
    cfg = round_config(study, f"{study.name}/eval")
    per_site, failures = evaluate_on_sites(
        site_grid(sites), cfg, study.rounds, model.params, arrays=model.arrays
    )
    if failures:
        raise RuntimeError(f"{study.name} {model.label}: evaluation failed at {failures}")
    return per_site


def run_method(
    ds: FederatedDataset,
    study_dict: Mapping[str, Any],
    method: str,
    seed: int,
    *,
    pooled_site: SiteData | None = None,
    extra_sites: Mapping[str, SiteData] | None = None,
) -> MethodRun:
    """Train ``method`` on ``ds`` with the study ``study_dict`` at ``seed`` and evaluate it.

    Parameters
    ----------
    ds:
        The federated dataset (already loaded).
    study_dict:
        A full study mapping (as a study file gives it); its ``strategy`` is used for
        federated methods; local and pooled models are trained with FedAvg over one site,
        which is plain local training (as ``run_simulation`` trains its baselines).
    method:
        A strategy name, ``local-<site>`` or ``pooled``.
    seed:
        The study seed: drives initialization, shuffling and site sampling.
    pooled_site:
        The pooled training data to use instead of ``ds.pooled()`` (a protocol may prescribe
        its own, e.g. FLamby's globally standardized pooled set).
    extra_sites:
        More evaluation sets, by name (e.g. ``{"holdout": ...}``), each evaluated as one site.
    """
    study = StudyConfig.from_dict({**study_dict, "seed": seed, "evaluate_every": 0})
    shape = ds.sites[0].train.input_shape
    if method == "pooled":
        grid, label = site_grid([pooled_site or ds.pooled()]), "pooled"
    elif method.startswith("local-"):
        grid, label = site_grid([ds.site(method.removeprefix("local-"))]), method
    elif method == study.strategy.name:
        grid, label = site_grid(ds.sites), "federated"
    else:
        raise ValueError(f"method {method!r}, but the study's strategy is {study.strategy.name!r}")
    model = train_on_grid(grid, study, shape, label=label, baseline=label != "federated")
    per_site = evaluate_model(ds.sites, study, model)
    extra = {
        name: evaluate_model([site], study, model)[site.site_id]
        for name, site in (extra_sites or {}).items()
    }
    return MethodRun(method, seed, per_site, extra)


def _stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``round(fraction * n_c)`` rows of each class ``c`` of ``y``."""
    held: list[int] = []
    for value in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == value))
        held.extend(members[: int(np.floor(fraction * len(members) + 0.5))].tolist())
    return np.array(sorted(held), dtype=np.int64)


def validation_split(
    ds: FederatedDataset, fraction: float = 0.3, seed: int = 2024
) -> FederatedDataset:
    """``ds`` with each site's test split replaced by ``fraction`` of its training rows.

    The held-out rows are drawn per site, stratified by ``y`` (the label, or the event
    indicator for survival data), from a generator seeded by ``seed``; the rest train. No test
    row is used. ``extra`` (e.g. a public holdout set) is dropped.
    """
    rng = np.random.default_rng(seed)
    sites = []
    for s in ds.sites:
        held = _stratified_holdout(np.asarray(s.train.y), fraction, rng)
        kept = np.setdiff1d(np.arange(len(s.train)), held)
        sites.append(SiteData(s.site_id, train=s.train.take(kept), test=s.train.take(held)))
    return FederatedDataset(
        name=ds.name,
        task=ds.task,
        sites=tuple(sites),
        feature_names=ds.feature_names,
        metrics=ds.metrics,
        description=f"validation split ({fraction:.0%} of each site's training rows)",
    )


def union_site(ds: FederatedDataset, name: str = "union") -> SiteData:
    """One evaluation site holding every site's test rows (its train split is unused)."""
    test = Dataset.concat([s.test for s in ds.sites])
    return SiteData(name, train=test, test=test)
