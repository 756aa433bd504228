"""Run a study in one process: real site logic behind an in-memory grid.

``run_simulation`` trains the federated model through the one round loop and, when the study
asks, the baselines trained the same way (each site alone; all data pooled, which only a
simulation on public data may do), evaluates every model on every site's test split, and
returns the results dict that ``fedcare simulate`` writes as ``results.json``.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from fedcare.analytics.disclosure import DEFAULT_MIN_CELL
from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.data.registry import load_dataset
from fedcare.data.schema_check import feature_schema, reference_schema, schema_differences
from fedcare.errors import ConfigError
from fedcare.evaluation.model_card import build_model_card
from fedcare.evaluation.summary import cross_site_matrix, exam_summary, summarize_sites
from fedcare.evaluation.validation import combine_validation
from fedcare.grid import Split
from fedcare.models.base import ModelAdapter
from fedcare.models.registry import build_model
from fedcare.packages.resolve import resolve_study_package
from fedcare.privacy.guard import guard_next_round
from fedcare.records.arrays import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.simulation.privacy import privacy_results
from fedcare.site.app import Mod, SiteApp
from fedcare.strategy.base import StrategyState
from fedcare.strategy.driver import continue_study, round_config, start_study, study_strategy
from fedcare.strategy.loop import RoundRecord, evaluate_on_sites
from fedcare.transport.inmemory import InMemoryGrid

__all__ = [
    "Progress",
    "SimulationResult",
    "TrainedModel",
    "agreeing_sites",
    "run_simulation",
    "simulation_card",
    "train_on_grid",
]

#: Called after every round with the model's label ("federated", "local-<site>", "pooled").
Progress = Callable[[str, RoundRecord], None]


@dataclass(frozen=True)
class TrainedModel:
    """A trained model with the preprocessing statistics it was trained with."""

    label: str
    params: ArrayRecord
    arrays: Mapping[str, ArrayRecord]
    history: list[RoundRecord]
    #: Round 0's statistics provenance: ``statistics_sites`` and ``statistics_rejected``.
    start: Mapping[str, Any] = field(default_factory=dict)
    #: The adapter that uses ``params`` (built from the study's model spec).
    adapter: ModelAdapter | None = field(default=None, compare=False, repr=False)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The model's scores for rows ``X``, preprocessed as the study's sites preprocess
        (e.g. scaled with ``arrays["preprocess"]`` under global scaling): what the adapter's
        ``predict`` returns for the model's task."""
        if self.adapter is None:
            raise ConfigError(f"model {self.label!r} was built without its adapter")
        return self.adapter.predict(self.params, X)


class SimulationResult(dict[str, Any]):
    """:func:`run_simulation`'s results dict (what ``results.json`` holds) with the trained
    models beside it: ``model`` (the federated one) and ``models`` by label."""

    model: TrainedModel
    models: dict[str, TrainedModel]


def grid_for(
    sites: list[SiteData],
    *,
    record: bool = False,
    mods: Mapping[str, Sequence[Mod]] | None = None,
    feature_names: Sequence[str] = (),
) -> InMemoryGrid:
    """An in-memory grid with one :class:`SiteApp` per site (with ``mods[site_id]``, if any)
    whose data has columns ``feature_names``."""
    mods = mods or {}
    apps = {s.site_id: SiteApp(s, mods=mods.get(s.site_id, ()), simulated=True) for s in sites}
    for app in apps.values():
        app.runtime.feature_names = tuple(feature_names)
    rows: dict[Split, dict[str, int]] = {
        "train": {s.site_id: len(s.train) for s in sites},
        "test": {s.site_id: len(s.test) for s in sites},
    }
    return InMemoryGrid(apps, record=record, declared_rows=rows)  # as sites declare at Hello


def train_on_grid(
    grid: InMemoryGrid,
    study: StudyConfig,
    input_shape: tuple[int, ...],
    *,
    label: str,
    baseline: bool = False,
    progress: Progress | None = None,
) -> TrainedModel:
    """Train ``study``'s model over ``grid``; baselines train with plain FedAvg (no DP).

    Raises
    ------
    PrivacyBudgetError
        Before the round that would take the study's epsilon past ``privacy.epsilon``
        (not for baselines, which spend none).
    """
    study_id = f"{study.name}/{label}"
    strategy = study_strategy(study, len(grid.site_ids()), baseline=baseline)
    start = start_study(grid, study, strategy, study_id, input_shape)
    done: list[dict[str, Any]] = []

    def on_round(rec: RoundRecord, _state: StrategyState) -> None:
        if progress is not None:
            progress(label, rec)
        done.append(rec.to_dict())
        if not baseline and rec.round < study.rounds:
            guard_next_round(study_id, study, done, rec.round + 1)

    if not baseline:
        guard_next_round(study_id, study, [], 1)  # as the coordinator: before any task
    state, history = continue_study(grid, study, strategy, study_id, start, on_round=on_round)
    provenance = {
        "statistics_sites": list(start.statistics_sites),
        "statistics_rejected": dict(start.statistics_rejected),
    }
    adapter = build_model(study.model)
    return TrainedModel(label, state.params, start.task_arrays, history, provenance, adapter)


def _evaluate(
    grid: InMemoryGrid,
    study: StudyConfig,
    model: TrainedModel,
    validation: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The model's metrics on every site's test rows; the sites' clinical validation
    summaries go into ``validation`` (the plan asks for them at round ``study.rounds``)."""
    cfg = round_config(study, f"{study.name}/eval")
    per_site, failures = evaluate_on_sites(
        grid, cfg, study.rounds, model.params, arrays=model.arrays, validation=validation
    )
    return {"per_site": per_site, **summarize_sites(per_site), "failed_sites": failures}


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
) -> SimulationResult:
    """Run ``study`` end to end and return the results dict (see module docstring), with the
    trained models as ``result.model`` (federated) and ``result.models`` (by label).

    ``mods`` adds site middleware by site id to the federated run (e.g. the attacks of
    :mod:`fedcare.simulation.attacks`); baselines run without it.
    """
    start = time.perf_counter()
    study_strategy(study, 1)  # a bad strategy name or option fails before any data is read
    study = resolve_study_package(study)  # stored once: every round runs the same package
    guard_next_round(f"{study.name}/federated", study, [], 1)  # nor a budget round 1 overspends
    if study.init_model is not None:
        raise ConfigError(
            f"init_model {study.init_model!r}: simulation has no model registry; "
            "continue from a registered model on a coordinator"
        )
    ds = agreeing_sites(dataset or load_dataset(study.dataset.name, **study.dataset.options))
    grid = grid_for(list(ds.sites), mods=mods, feature_names=ds.feature_names)
    shape = ds.sites[0].train.input_shape
    models = [train_on_grid(grid, study, shape, label="federated", progress=progress)]
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
    evaluated = {m.label: _evaluate(grid, study, m, summaries[m.label]) for m in models}
    results = _results(study, ds, models, evaluated)
    validation = {
        m.label: model_validation(study, m, summaries[m.label], ds.feature_names)
        for m in models
        if summaries[m.label]
    }
    if validation:
        results["validation"] = validation
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
            m.label: _evaluate(holdout_grid, study, m)["per_site"].get("holdout", {})
            for m in models
        }
    results["timing"] = {"total_s": time.perf_counter() - start}
    out = SimulationResult(results)
    out.model, out.models = models[0], {m.label: m for m in models}
    return out


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
