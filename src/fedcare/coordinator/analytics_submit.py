"""Queueing a federated analytics job: what ``fedcare analytics QUERY.yaml --federation HOME``
and ``POST /api/v1/analytics`` both do (one function, so the stored job is the same).

:func:`federation_spec` makes the spec as a federation runs it (``--dataset`` replaces its
dataset; the folder this host resolved paths from is dropped), :func:`federation_plan` the
plan the sites receive (its hash is what a steward approves), and :func:`queue_analytics_job`
stores the job (:func:`fedcare.coordinator.analytics_jobs.analytics_study_config`).
"""

from __future__ import annotations

from typing import Any

import yaml

from fedcare.analytics.spec import AnalyticsSpec
from fedcare.coordinator.store import CoordinatorStore
from fedcare.errors import ConfigError, FedcareError

__all__ = ["federation_plan", "federation_spec", "queue_analytics_job", "spec_from_text"]


def spec_from_text(text: str, source: str = "analytics spec") -> AnalyticsSpec:
    """The analytics spec in YAML ``text`` (``queries:`` at the top, or under ``analytics:``).

    Raises
    ------
    ConfigError
        Not YAML, or not a valid spec (the message names the field).
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if isinstance(data, dict) and "analytics" in data and "queries" not in data:
        data = data["analytics"]
    return AnalyticsSpec.from_dict(data, source=source)


def _columns(name: str, options: dict[str, Any]) -> tuple[str, ...]:
    """The public feature names of built-in dataset ``name`` (read here, on this host); none
    for a dataset a site defines itself (schema + mapping), whose tables name the variables."""
    from fedcare.data.registry import DATASET_NAMES, load_dataset
    from fedcare.errors import DataError

    if name not in DATASET_NAMES:  # 'cdm' and site-defined datasets: harmonized tables
        return ()
    try:
        return load_dataset(name, **options).feature_names
    except DataError as err:
        raise FedcareError(
            f"cannot read the feature names of dataset {name!r} on this host, so queries "
            f"could not name its columns: {err}"
        ) from None


def federation_spec(spec: AnalyticsSpec, dataset: str | None) -> AnalyticsSpec:
    """The spec as queued on a federation: ``dataset`` replaces its dataset (name and
    options); a folder this host resolved paths from is dropped, so a steward's
    ``fedcare site plan`` on another machine prints the same hash."""
    from fedcare.records.config_file import BASE_DIR_OPTION

    options = {k: v for k, v in spec.dataset_options.items() if k != BASE_DIR_OPTION}
    update: dict[str, Any] = {"dataset_options": options}
    if dataset is not None and dataset != spec.dataset:
        update = {"dataset": dataset, "dataset_options": {}}
    return spec.model_copy(update=update)


def federation_plan(spec: AnalyticsSpec) -> dict[str, Any]:
    """The plan the sites receive for ``spec`` on a federation (its hash is what a steward
    approves: ``fedcare site plan QUERY.yaml``)."""
    from fedcare.analytics.run import analytics_plan

    columns = _columns(spec.dataset, spec.dataset_options) if spec.dataset else ()
    return analytics_plan(spec, columns)


def queue_analytics_job(
    store: CoordinatorStore,
    spec: AnalyticsSpec,
    *,
    dataset: str | None = None,
    min_sites: int = 1,
    owner: str | None = None,
) -> str:
    """Queue ``spec`` (run on ``dataset`` when given) as an analytics job owned by ``owner``
    (None: submitted on the coordinator's host); returns its id. The coordinator starts it
    once ``min_sites`` sites offer the dataset.

    Raises
    ------
    ConfigError
        The spec names no dataset, or ``min_sites`` is below 1.
    FedcareError
        The dataset's feature names cannot be read on this host.
    """
    from fedcare.coordinator.analytics_jobs import analytics_study_config

    spec = federation_spec(spec, dataset)
    if not spec.dataset:
        raise ConfigError(f"analytics {spec.name!r}: 'dataset' is required on a federation")
    columns = federation_plan(spec)["columns"]
    config = analytics_study_config(spec, min_sites=min_sites, columns=columns)
    return store.create_study(spec.name, config, 0, owner=owner)
