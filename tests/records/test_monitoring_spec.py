"""The study's ``monitoring:`` section (fedcare.records.monitoring_spec)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcare.errors import ConfigError
from fedcare.inference.bundle import build_bundle, bundle_from_study, load_bundle, write_bundle
from fedcare.records.monitoring_spec import MonitoringSpec
from fedcare.records.study import StudyConfig

BASE = {"name": "s", "dataset": {"name": "heart-disease"}, "model": {"kind": "logistic"}}


def test_a_study_declares_thresholds_and_the_default_declares_none() -> None:
    study = StudyConfig.from_dict(
        {
            **BASE,
            "monitoring": {"min_auroc": 0.7, "max_psi": 0.25, "calibration_slope": [0.8, 1.25]},
        }
    )
    assert study.monitoring == MonitoringSpec(
        min_auroc=0.7, max_psi=0.25, calibration_slope=(0.8, 1.25)
    )
    assert study.monitoring.min_outcomes == 50
    plain = StudyConfig.from_dict(BASE).monitoring
    assert (plain.min_auroc, plain.max_psi, plain.calibration_slope) == (None, None, None)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"calibration_slope": [1.25, 0.8]}, "0 < low < high"),
        ({"min_auroc": 1.5}, "min_auroc"),
        ({"max_psi": 0.25, "psi": 1}, "psi"),
        ({"min_outcomes": 0}, "min_outcomes"),
    ],
)
def test_bad_thresholds_name_the_field(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StudyConfig.from_dict({**BASE, "monitoring": section})


def test_the_bundle_carries_the_thresholds(tmp_path: Path) -> None:
    study = StudyConfig.from_dict({**BASE, "monitoring": {"max_psi": 0.2}})
    files = bundle_from_study(
        study.model_dump(mode="json"),
        params={"weight": np.zeros(2), "bias": np.zeros(())},
        task_arrays={},
        feature_names=["a", "b"],
        input_shape=[2],
    )
    bundle = load_bundle(write_bundle(files, tmp_path / "b"))
    assert bundle.monitoring["max_psi"] == 0.2 and bundle.monitoring["min_outcomes"] == 50
    bare = build_bundle(
        model={"kind": "logistic"},
        params={"weight": np.zeros(2)},
        feature_names=["a", "b"],
        input_shape=[2],
        preprocessing={},
    )
    assert "monitoring" not in load_bundle(write_bundle(bare, tmp_path / "c")).description
