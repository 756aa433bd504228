"""Training and evaluation of one model in simulation: the pieces :mod:`fedcare.simulation.run`
and :mod:`fedcare.simulation.loso` share.

:func:`grid_for` puts real site logic (:class:`~fedcare.site.app.SiteApp`) behind an in-memory
grid, :func:`train_on_grid` trains a study's model over it through the one round loop (with the
coordinator's privacy budget guard) and :func:`evaluate_model` evaluates a trained model on
every site of a grid, the sites returning their clinical validation summaries as they do on the
final round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.data.base import SiteData
from fedcare.errors import ConfigError
from fedcare.evaluation.summary import summarize_sites
from fedcare.grid import Grid, Split
from fedcare.models.base import ModelAdapter
from fedcare.models.registry import build_model
from fedcare.privacy.guard import guard_next_round
from fedcare.records.arrays import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.simulation.parallel import ParallelGrid, check_workers
from fedcare.simulation.personal import without_personalization
from fedcare.site.app import Mod, SiteApp
from fedcare.strategy.base import StrategyState
from fedcare.strategy.driver import continue_study, round_config, start_study, study_strategy
from fedcare.strategy.loop import RoundRecord, evaluate_on_sites
from fedcare.transport.inmemory import InMemoryGrid

__all__ = [
    "BACKENDS",
    "Progress",
    "TrainedModel",
    "check_backend",
    "evaluate_model",
    "grid_for",
    "open_grid",
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


def grid_for(
    sites: list[SiteData],
    *,
    record: bool = False,
    mods: Mapping[str, Sequence[Mod]] | None = None,
    feature_names: Sequence[str] = (),
    site_reports: Path | None = None,
) -> InMemoryGrid:
    """An in-memory grid with one :class:`SiteApp` per site (with ``mods[site_id]``, if any)
    whose data has columns ``feature_names``; each site writes its site-only reports (saliency
    maps) under ``site_reports / <site>`` (none without it)."""
    mods = mods or {}
    apps = {s.site_id: SiteApp(s, mods=mods.get(s.site_id, ()), simulated=True) for s in sites}
    for site_id, app in apps.items():
        app.runtime.feature_names = tuple(feature_names)
        if site_reports is not None:
            app.runtime.report_dir = site_reports / site_id
    rows: dict[Split, dict[str, int]] = {
        "train": {s.site_id: len(s.train) for s in sites},
        "test": {s.site_id: len(s.test) for s in sites},
    }
    return InMemoryGrid(apps, record=record, declared_rows=rows)  # as sites declare at Hello


#: The simulation's grids: ``inmemory`` (sequential, this process), ``parallel`` (worker
#: processes, :mod:`fedcare.simulation.parallel`), ``ray`` (Ray actors, the ``ray`` extra,
#: :mod:`fedcare.simulation.ray_grid`).
BACKENDS = ("inmemory", "parallel", "ray")


def check_backend(backend: object, workers: int, address: str | None) -> str:
    """The grid ``backend`` names, resolved: ``None`` is ``parallel`` for ``workers`` > 1, else
    ``inmemory``.

    Raises
    ------
    ConfigError
        For an unknown backend, ``workers`` < 1, an ``address`` without the Ray backend, or
        the Ray backend without Ray installed.
    """
    check_workers(workers)
    if backend is None:
        backend = "parallel" if workers > 1 else "inmemory"
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if address is not None and backend != "ray":
        raise ConfigError(f"a Ray address ({address!r}) needs the ray backend, not {backend!r}")
    if backend == "ray":  # fail before any data is read when Ray is not installed
        from fedcare.simulation.ray_connect import import_ray

        import_ray()
    return str(backend)


@contextmanager
def open_grid(
    sites: list[SiteData],
    *,
    workers: int = 1,
    record: bool = False,
    mods: Mapping[str, Sequence[Mod]] | None = None,
    feature_names: Sequence[str] = (),
    site_reports: Path | None = None,
    backend: str | None = None,
    address: str | None = None,
) -> Iterator[Grid]:
    """The simulation's grid for ``sites``, on ``backend`` (:data:`BACKENDS`):

    - ``inmemory``: :func:`grid_for`'s sequential in-memory grid;
    - ``parallel``: a :class:`~fedcare.simulation.parallel.ParallelGrid` of ``workers``
      processes;
    - ``ray``: a :class:`~fedcare.simulation.ray_grid.RayGrid` on the Ray cluster at
      ``address`` (``None``: a local instance), with ``workers`` actors when more than 1, else
      one per CPU up to the site count;
    - ``None``: ``parallel`` when ``workers`` > 1, else ``inmemory``.

    Workers and actors stop when the ``with`` block ends.

    Raises
    ------
    ConfigError
        For ``workers`` < 1, an unknown backend, mods a worker process cannot be sent, Ray not
        installed or its cluster unreachable.
    """
    options: dict[str, Any] = {
        "record": record,
        "mods": mods,
        "feature_names": feature_names,
        "site_reports": site_reports,
    }
    backend = check_backend(backend, workers, address)
    if backend == "inmemory":
        yield grid_for(sites, **options)
        return
    if backend == "ray":
        from fedcare.simulation.ray_grid import RayGrid  # Ray is an extra: imported on use

        actors = workers if workers > 1 else None
        with RayGrid(sites, actors=actors, address=address, **options) as ray_grid:
            yield ray_grid
        return
    with ParallelGrid(sites, workers=workers, **options) as grid:
        yield grid


def train_on_grid(
    grid: Grid,
    study: StudyConfig,
    input_shape: tuple[int, ...],
    *,
    label: str,
    baseline: bool = False,
    progress: Progress | None = None,
    site_reports: bool = False,
) -> TrainedModel:
    """Train ``study``'s model over ``grid``; baselines train with plain FedAvg (no DP).
    ``site_reports``: the grid's sites write their site-only reports (saliency maps) at the
    final evaluation, as a deployed site does.

    Raises
    ------
    PrivacyBudgetError
        Before the round that would take the study's epsilon past ``privacy.epsilon``
        (not for baselines, which spend none).
    """
    study_id = f"{study.name}/{label}"
    study = without_personalization(study) if baseline else study
    # The report's clinical validation summaries come from evaluate_model's evaluation of the
    # trained model; the training loop's last evaluation computes only what the site-only
    # report needs (a cheap summary beside the saliency maps), or nothing.
    cheap = {"bootstrap": 0, "importance": False, "subgroups": []}
    keep = site_reports and study.validation.saliency is not None
    validation = study.validation.model_copy(update=cheap if keep else {"report": False})
    study = study.model_copy(update={"validation": validation})
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


def evaluate_model(
    grid: Grid,
    study: StudyConfig,
    model: TrainedModel,
    validation: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The model's metrics on every site's test rows; the sites' clinical validation
    summaries go into ``validation`` (the plan asks for them at round ``study.rounds``).
    Sites write no saliency report here: the federated model's was written at its training's
    final evaluation, under its study id, as a deployed site writes it."""
    no_saliency = study.validation.model_copy(update={"saliency": None})
    study = without_personalization(study).model_copy(update={"validation": no_saliency})
    cfg = round_config(study, f"{study.name}/eval")
    per_site, failures = evaluate_on_sites(
        grid, cfg, study.rounds, model.params, arrays=model.arrays, validation=validation
    )
    return {"per_site": per_site, **summarize_sites(per_site), "failed_sites": failures}
