"""Analytics jobs on the coordinator: the stored config and the stored result."""

from __future__ import annotations

import pytest

from fedcare.analytics.spec import AnalyticsSpec
from fedcare.coordinator import CoordinatorStore
from fedcare.coordinator.analytics_jobs import (
    RESULT_KIND,
    analytics_job_result,
    analytics_study_config,
    is_analytics_study,
)
from fedcare.errors import ConfigError, ConflictError
from fedcare.records.arrays import ArrayRecord
from fedcare.transport.codec import encode_arrays

SPEC = AnalyticsSpec.from_dict(
    {"name": "a", "dataset": "heart-disease", "queries": [{"type": "count"}]}
)


def test_config_carries_the_validated_spec() -> None:
    config = analytics_study_config(SPEC, min_sites=3, columns=("age", "sex"))
    assert is_analytics_study(config)
    assert AnalyticsSpec.from_dict(config["analytics"]) == SPEC
    assert config["dataset"] == {"name": "heart-disease"} and config["min_sites"] == 3
    assert config["columns"] == ["age", "sex"]
    assert not is_analytics_study({"name": "train", "rounds": 3})


def test_config_needs_a_dataset_and_sites() -> None:
    with pytest.raises(ConfigError, match="'dataset' is required"):
        analytics_study_config(SPEC.model_copy(update={"dataset": None}))
    with pytest.raises(ConfigError, match="min_sites must be >= 1, got 0"):
        analytics_study_config(SPEC, min_sites=0)


def test_result_round_trips_through_the_store(store: CoordinatorStore) -> None:
    study_id = store.create_study("a", analytics_study_config(SPEC), 0)
    with pytest.raises(ConflictError, match="has no result yet \\(pending\\)"):
        analytics_job_result(store, study_id)
    assert analytics_job_result(store, study_id, require=False) is None
    store.set_study_status(study_id, "running")
    result = {"name": "a", "queries": [{"type": "count", "count": 12.0}]}
    empty = encode_arrays(ArrayRecord())
    store.record_round(
        study_id,
        1,
        params=empty,
        state=empty,
        record={"kind": RESULT_KIND, "result": result},
        duration_s=0.1,
    )
    assert analytics_job_result(store, study_id) == result


def test_training_studies_have_no_analytics_result(store: CoordinatorStore) -> None:
    study_id = store.create_study("train", {"name": "train", "rounds": 1}, 0)
    assert analytics_job_result(store, study_id) is None
