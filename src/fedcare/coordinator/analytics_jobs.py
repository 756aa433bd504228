"""Federated analytics as a coordinator job: a study whose config holds ``analytics:``.

``fedcare analytics QUERY.yaml --federation HOME`` stores a study whose config is
:func:`analytics_study_config` (the validated spec, its dataset, ``min_sites`` and a round
timeout) instead of a training study. The coordinator's scheduler starts a
:class:`~fedcare.coordinator.runner.StudyRunner` for it as for any study; the runner hands it
to :func:`run_analytics_job`, which waits for ``min_sites`` sites offering the dataset, runs
:func:`fedcare.analytics.run.run_analytics` over the study's :class:`CoordinatorGrid` and
stores the combined result as the study's round 1 record (one transaction).
``fedcare study report`` reads it back with :func:`analytics_job_result`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from fedcare.analytics.run import run_analytics
from fedcare.analytics.spec import AnalyticsSpec
from fedcare.coordinator.grid import CoordinatorGrid
from fedcare.coordinator.hub import Hub
from fedcare.coordinator.store import CoordinatorStore
from fedcare.errors import ConfigError, ConflictError, FedcareError
from fedcare.records.arrays import ArrayRecord
from fedcare.transport.codec import encode_arrays

__all__ = [
    "ANALYTICS_KEY",
    "analytics_job_result",
    "analytics_study_config",
    "is_analytics_study",
    "run_analytics_job",
]

#: The study config key that marks an analytics job.
ANALYTICS_KEY = "analytics"
RESULT_KIND = "analytics-result"


def is_analytics_study(config: Mapping[str, Any]) -> bool:
    """True when a stored study config is an analytics job."""
    return isinstance(config, Mapping) and ANALYTICS_KEY in config


def analytics_study_config(
    spec: AnalyticsSpec,
    *,
    min_sites: int = 1,
    round_timeout: float | None = 600.0,
    columns: Sequence[str] = (),
) -> dict[str, Any]:
    """The config to store for ``spec`` (validated; errors name the field).

    Raises
    ------
    ConfigError
        If the spec names no dataset or ``min_sites`` is below 1.
    """
    if not spec.dataset:
        raise ConfigError(f"analytics {spec.name!r}: 'dataset' is required on a federation")
    if min_sites < 1:
        raise ConfigError(f"analytics {spec.name!r}: min_sites must be >= 1, got {min_sites}")
    return {
        ANALYTICS_KEY: spec.model_dump(mode="json"),
        "dataset": {"name": spec.dataset},
        "min_sites": min_sites,
        "round_timeout": round_timeout,
        "columns": list(columns),
    }


def _wait_for_sites(grid: CoordinatorGrid, needed: int, stop: threading.Event) -> None:
    while len(grid.site_ids()) < needed:
        if stop.wait(0.5):
            raise FedcareError("the coordinator is stopping before the analytics job started")


def run_analytics_job(
    store: CoordinatorStore,
    hub: Hub,
    study_id: str,
    *,
    stop: threading.Event,
    liveness_s: float = 30.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the analytics job ``study_id`` (a running study) and store its result.

    A result stored by an earlier attempt (before a coordinator restart) is kept.

    Raises
    ------
    ConfigError
        If the stored config is not a valid analytics job.
    RoundFailedError
        If no site answers.
    """
    done = analytics_job_result(store, study_id, require=False)
    if done is not None:
        return done
    info = store.get_study(study_id)
    config = info.config
    spec = AnalyticsSpec.from_dict(config.get(ANALYTICS_KEY), source=f"study {study_id}")
    dataset = str(config.get("dataset", {}).get("name") or spec.dataset)
    grid = CoordinatorGrid(
        store, store.artifacts, hub, study_id, dataset, liveness_s=liveness_s, stop=stop
    )
    _wait_for_sites(grid, int(config.get("min_sites", 1)), stop)
    start = time.perf_counter()
    result = run_analytics(
        grid,
        spec,
        study_id=study_id,
        seed=seed,
        columns=list(config.get("columns") or ()),
        round_timeout=config.get("round_timeout"),
    ).to_dict()
    store.record_round(
        study_id,
        1,
        params=encode_arrays(ArrayRecord()),
        state=encode_arrays(ArrayRecord()),
        record={"kind": RESULT_KIND, "result": result},
        duration_s=time.perf_counter() - start,
    )
    return result


def analytics_job_result(
    store: CoordinatorStore, study_id: str, *, require: bool = True
) -> dict[str, Any] | None:
    """The stored result of analytics job ``study_id``; ``None`` for a training study.

    Raises
    ------
    ConflictError
        If ``require`` and the job has no result yet (names its status and reason).
    """
    info = store.get_study(study_id)
    if not is_analytics_study(info.config):
        return None
    for row in store.list_rounds(study_id):
        record = dict(row.record)
        if record.get("kind") == RESULT_KIND:
            return dict(record["result"])
    if require:
        reason = f": {info.reason}" if info.reason else ""
        raise ConflictError(f"analytics job {study_id} has no result yet ({info.status}{reason})")
    return None
