"""Run a study in one process: real site logic behind an in-memory grid.

``run_simulation`` trains the federated model through the one round loop and, when the study
asks, the baselines trained the same way (each site alone; all data pooled, which only a
simulation on public data may do), evaluates every model on every site's test split, and
returns the results dict that ``fedcare simulate`` writes as ``results.json``.
With ``validation: leave_one_site_out`` it then validates on each site held out
(:mod:`fedcare.simulation.loso`, ``results["leave_one_site_out"]``). The pieces that train and
evaluate one model live in :mod:`fedcare.simulation.training` (re-exported here).

The study's privacy budget is enforced as a coordinator enforces it: before every round of the
federated model, :func:`fedcare.privacy.guard.guard_next_round` (the same function the
coordinator's runner calls) refuses the round that would take the study's epsilon past
``privacy.epsilon``, and the simulation fails with that :class:`PrivacyBudgetError`; round 1 is
checked before any data is read. ``results["privacy"]`` reports the epsilon spent and the
budget.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fedcare.analytics.disclosure import DEFAULT_MIN_CELL
from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.data.registry import load_dataset
from fedcare.data.schema_check import feature_schema, reference_schema, schema_differences
from fedcare.errors import ConfigError
from fedcare.evaluation.model_card import build_model_card
from fedcare.evaluation.summary import cross_site_matrix, exam_summary
from fedcare.evaluation.validation import combine_validation
from fedcare.grid import Grid
from fedcare.packages.resolve import resolve_study_package
from fedcare.privacy.guard import guard_next_round
from fedcare.records.study import StudyConfig
from fedcare.simulation.loso import check_leave_one_site_out, leave_one_site_out
from fedcare.simulation.personal import personalization_results
from fedcare.simulation.privacy import privacy_results
from fedcare.simulation.training import (
    Progress,
    TrainedModel,
    check_backend,
    evaluate_model,
    grid_for,
    open_grid,
    train_on_grid,
)
from fedcare.site.app import Mod
from fedcare.strategy.driver import round_config, study_strategy

__all__ = [
    "Progress",
    "SimulationResult",
    "TrainedModel",
    "agreeing_sites",
    "evaluate_model",
    "grid_for",
    "run_simulation",
    "simulation_card",
    "train_on_grid",
]


class SimulationResult(dict[str, Any]):
    """:func:`run_simulation`'s results dict (what ``results.json`` holds) with the trained
    models beside it: ``model`` (the federated one) and ``models`` by label."""

    model: TrainedModel
    models: dict[str, TrainedModel]


def model_validation(
    study: StudyConfig,
    model: TrainedModel,
    summaries: Mapping[str, Mapping[str, Any]],
    feature_names: Sequence[str],
) -> dict[str, Any]:
    """The report's clinical validation of ``model`` from its sites' summaries."""
    return combine_validation(
        summaries,
        study.validation.model_dump(mode="json"),
        params=model.params,
        model=study.model,
        feature_names=feature_names,
        min_cell=DEFAULT_MIN_CELL,
    )


def agreeing_sites(ds: FederatedDataset) -> FederatedDataset:
    """``ds`` without the sites whose feature schema (input shape, dtype, column names) differs
    from the majority's, as a coordinator refuses them; ``extra["refused_sites"]`` says why.
    Every site of one :class:`FederatedDataset` shares its ``feature_names``, so only the shape
    and dtype can differ here."""
    schemas = {
        s.site_id: feature_schema(s.train.input_shape, str(s.train.X.dtype), ds.feature_names)
        for s in ds.sites
    }
    reference = reference_schema(schemas)
    refused = {
        site: "feature schema differs from the study's: " + "; ".join(diff)
        for site, schema in schemas.items()
        if (diff := schema_differences(schema, reference))
    }
    if not refused:
        return ds
    previous = ds.extra.get("refused_sites")
    extra = {**ds.extra, "refused_sites": {**(previous or {}), **refused}}  # type: ignore[dict-item]
    kept = tuple(s for s in ds.sites if s.site_id not in refused)
    return dataclasses.replace(ds, sites=kept, extra=extra)


def run_simulation(
    study: StudyConfig,
    *,
    dataset: FederatedDataset | None = None,
    progress: Progress | None = None,
    mods: Mapping[str, Sequence[Mod]] | None = None,
    site_reports: Path | None = None,
    workers: int = 1,
    backend: str | None = None,
    address: str | None = None,
) -> SimulationResult:
    """Run ``study`` end to end and return the results dict (see module docstring), with the
    trained models as ``result.model`` (federated) and ``result.models`` (by label; with
    leave-one-site-out also ``loso-<site>`` and ``loso-<site>-pooled``).

    ``mods`` adds site middleware by site id to the federated run (e.g. the attacks of
    :mod:`fedcare.simulation.attacks`); baselines run without it. ``site_reports``: the folder
    where each site of the federated grid writes its site-only reports (saliency maps of image
    models, ``<site_reports>/<site>/...``; :mod:`fedcare.site.site_reports`). ``workers``: the
    federated grid's sites train in that many worker processes
    (:mod:`fedcare.simulation.parallel`; the same model as with 1, the sequential in-memory
    grid); baselines, hold-out and leave-one-site-out evaluations run in this process.
    ``backend`` picks the federated grid (``inmemory``, ``parallel``, ``ray``: Ray actors on
    the cluster at ``address`` or a local instance, :mod:`fedcare.simulation.ray_grid`; see
    :func:`~fedcare.simulation.training.open_grid`), the same model on each.
    """
    start = time.perf_counter()
    check_backend(backend, workers, address)
    study_strategy(study, 1)  # a bad strategy name or option fails before any data is read
    study = resolve_study_package(study)  # stored once: every round runs the same package
    guard_next_round(f"{study.name}/federated", study, [], 1)  # nor a budget round 1 overspends
    check_leave_one_site_out(study)  # refused for private studies before any data is read
    if study.init_model is not None:
        raise ConfigError(
            f"init_model {study.init_model!r}: simulation has no model registry; "
            "continue from a registered model on a coordinator"
        )
    ds = agreeing_sites(dataset or load_dataset(study.dataset.name, **_dataset_options(study)))
    check_leave_one_site_out(study, len(ds.sites))
    with open_grid(
        list(ds.sites),
        workers=workers,
        backend=backend,
        address=address,
        mods=mods,
        feature_names=ds.feature_names,
        site_reports=site_reports,
    ) as grid:
        out = _simulate_on(grid, study, ds, progress, site_reports)
    out["timing"] = {"total_s": time.perf_counter() - start}
    return out


def _simulate_on(
    grid: Grid,
    study: StudyConfig,
    ds: FederatedDataset,
    progress: Progress | None,
    site_reports: Path | None,
) -> SimulationResult:
    """:func:`run_simulation`'s work once the federated grid is open."""
    shape = ds.sites[0].train.input_shape
    models = [
        train_on_grid(
            grid,
            study,
            shape,
            label="federated",
            progress=progress,
            site_reports=site_reports is not None,
        )
    ]
    if study.baselines.local:
        for site in ds.sites:
            models.append(
                train_on_grid(
                    grid_for([site], feature_names=ds.feature_names),
                    study,
                    shape,
                    label=f"local-{site.site_id}",
                    baseline=True,
                    progress=progress,
                )
            )
    if study.baselines.pooled:
        pooled = ds.pooled()
        models.append(
            train_on_grid(
                grid_for([pooled], feature_names=ds.feature_names),
                study,
                shape,
                label="pooled",
                baseline=True,
                progress=progress,
            )
        )
    summaries: dict[str, dict[str, dict[str, Any]]] = {m.label: {} for m in models}
    evaluated = {m.label: evaluate_model(grid, study, m, summaries[m.label]) for m in models}
    results = _results(study, ds, models, evaluated)
    validation = {
        m.label: model_validation(study, m, summaries[m.label], ds.feature_names)
        for m in models
        if summaries[m.label]
    }
    if validation:
        results["validation"] = validation
    fed = models[0]
    results.update(personalization_results(grid, study, fed.params, fed.arrays, evaluated))
    loso: dict[str, TrainedModel] = {}
    if study.validation.leave_one_site_out:  # fedcare.simulation.loso
        by_label = {m.label: m for m in models}
        results["leave_one_site_out"], loso = leave_one_site_out(
            study, ds, trained=by_label, progress=progress
        )
    results["model_card"] = simulation_card(
        study,
        models[0],
        evaluated["federated"],
        validation=validation.get("federated"),
        dataset=results["dataset"],
        feature_names=ds.feature_names,
        task=results.get("task"),
    )
    # epsilon per round/site/study and membership-attack AUROCs, when the study asks
    results.update(
        privacy_results(
            study, ds.sites, models[0].params, dict(models[0].arrays), results["history"]
        )
    )
    holdout = ds.extra.get("holdout")
    if isinstance(holdout, Dataset):
        # A public held-out test set (e.g. PneumoniaMNIST's official test split), evaluated by
        # the same site code as if it were one more site.
        holdout_grid = grid_for([SiteData("holdout", train=holdout, test=holdout)])
        results["holdout"] = {
            m.label: evaluate_model(holdout_grid, study, m)["per_site"].get("holdout", {})
            for m in models
        }
    out = SimulationResult(results)
    out.model, out.models = models[0], {**{m.label: m for m in models}, **loso}
    return out


def _dataset_options(study: StudyConfig) -> dict[str, Any]:
    """The dataset's options, with the study's ``skip_invalid_rows`` for mapped tables (the
    ``cdm`` dataset; built-in datasets have no row check, so nothing to skip)."""
    skip = study.dataset.skip_invalid_rows
    if skip is None or study.dataset.name != "cdm":
        return dict(study.dataset.options)
    return {**study.dataset.options, "skip_invalid_rows": skip.max_fraction}


def simulation_card(
    study: StudyConfig,
    model: TrainedModel,
    final: Mapping[str, Any],
    *,
    validation: Mapping[str, Any] | None = None,
    dataset: Mapping[str, Any] | None = None,
    feature_names: Sequence[str] = (),
    task: str | None = None,
) -> dict[str, Any]:
    """The federated model's card: no registry (version and parent null), in-memory sites;
    its TRIPOD+AI block from the model's clinical validation, data source and predictors."""
    from fedcare._version import __version__

    return build_model_card(
        study=study.model_dump(mode="json"),
        study_id=f"{study.name}/{model.label}",
        plan=round_config(study, study.name).plan,
        history=[r.to_dict() for r in model.history],
        final=final,
        params=model.params,
        created=datetime.now(timezone.utc),
        fedcare_version=__version__,
        validation=validation,
        dataset=dataset,
        feature_names=feature_names,
        task=task,
    )


def _results(
    study: StudyConfig,
    ds: FederatedDataset,
    models: list[TrainedModel],
    evaluated: Mapping[str, dict[str, Any]],
) -> dict[str, Any]:
    from fedcare._version import __version__

    federated = models[0]
    results: dict[str, Any] = {
        "fedcare_version": __version__,
        "study": {
            **study.model_dump(),
            "strategy": study.strategy.name,
            "strategy_options": study.strategy.options,
            "dataset": study.dataset.name,
        },
        "dataset": {
            "name": ds.name,
            "description": ds.description,
            "citation": ds.citation,
            "license": ds.license,
            # rows each site left out under the study's skip_invalid_rows (counts by reason)
            **({"invalid_rows": ds.extra["invalid_rows"]} if "invalid_rows" in ds.extra else {}),
        },
        "task": ds.task,
        "metrics": list(ds.metrics),
        "sites": ds.site_ids,
        "site_sizes": {s.site_id: {"train": len(s.train), "test": len(s.test)} for s in ds.sites},
        "start": dict(federated.start),
        "history": [r.to_dict() for r in federated.history],
        "final": evaluated["federated"],
    }
    baselines: dict[str, Any] = {}
    for m in models[1:]:
        entry = {**evaluated[m.label], "history": [r.to_dict() for r in m.history]}
        if m.label == "pooled":
            baselines["pooled"] = entry
        else:
            baselines.setdefault("local", {})[m.label.removeprefix("local-")] = entry
    if baselines:
        results["baselines"] = baselines
    if study.baselines.cross_site and len(models) > 1:
        cells = {m.label: evaluated[m.label]["per_site"] for m in models}
        cross = cross_site_matrix(
            {m.label: m.label for m in models},
            ds.site_ids,
            lambda label, site: cells[label].get(site, {}),
            ds.primary_metric,
        )
        results["cross_site"] = cross
        if study.baselines.local:
            results["summary"] = exam_summary(cross)
    return results
