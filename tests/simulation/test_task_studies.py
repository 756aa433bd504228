"""Multiclass and regression studies end to end: package, loop, evaluation, summary, report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from fedcare.evaluation.report import render_report
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from tests.conftest import require_mirror

SEVERITY_MODEL = """
from functools import partial

from sklearn.linear_model import LogisticRegression

from fedcare.models import SklearnModel


def build(C: float = 1.0) -> SklearnModel:
    return SklearnModel(partial(LogisticRegression, C=C, max_iter=100), "multiclass", classes=5)
"""

LOS_MODEL = """
from functools import partial

from fedcare.models import make_torch_adapter
from fedcare.models.torch_nets import mlp


def build(hidden: int = 8):
    return make_torch_adapter(partial(mlp, hidden=(hidden,)), "regression", name="los-mlp")
"""


def _package(folder: Path, name: str, task: str, requires: str, code: str) -> Path:
    folder.mkdir()
    manifest = {
        "name": name,
        "version": "0.1.0",
        "entry_point": "model:build",
        "task": task,
        "dependencies": [requires],
        "outputs": {"params": True},
    }
    (folder / "fedcare-package.yaml").write_text(yaml.safe_dump(manifest))
    (folder / "model.py").write_text(code)
    return folder


def _study(package: Path, dataset: dict[str, object], training: dict[str, object]) -> StudyConfig:
    return StudyConfig.model_validate(
        {
            "name": "task-study",
            "dataset": dataset,
            "model": {"kind": "package", "package": str(package)},
            "preprocessing": {"impute": "mean", "scale": "global"},
            "strategy": {"name": "fedavg"},
            "training": training,
            "rounds": 3,
            "min_sites": 2,
            "seed": 0,
            "baselines": {"local": True, "pooled": True, "cross_site": True},
        }
    )


def test_heart_disease_severity_with_a_scikit_learn_package(tmp_path: Path) -> None:
    require_mirror()
    package = _package(
        tmp_path / "sev", "severity", "multiclass", "scikit-learn>=1.3", SEVERITY_MODEL
    )
    study = _study(
        package,
        {"name": "heart-disease", "options": {"protocol": "raw", "target": "severity"}},
        {"epochs": 1, "lr": 0.1},
    )
    result = run_simulation(study)
    assert result["task"] == "multiclass" and result["metrics"][0] == "macro_auroc"
    assert result.model.params.shapes == {"coef": (5, 13), "intercept": (5,)}
    weighted = result["final"]["weighted"]
    assert 0.6 < weighted["macro_auroc"] < 1.0 and 0.2 < weighted["balanced_accuracy"] < 1.0
    pooled = result["baselines"]["pooled"]["weighted"]["macro_auroc"]
    assert abs(weighted["macro_auroc"] - pooled) < 0.1
    probs = result.model.predict(np.zeros((2, 13)))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert result["summary"]["metric"] == "macro_auroc" and not result["summary"]["lower_is_better"]
    assert "macro_auroc" in render_report(result)


@pytest.mark.torch
@pytest.mark.slow
def test_eicu_length_of_stay_with_a_torch_package(tmp_path: Path) -> None:
    require_mirror()
    pytest.importorskip("torch")
    package = _package(tmp_path / "los", "los", "regression", "torch>=2.0", LOS_MODEL)
    study = _study(
        package,
        {"name": "eicu", "options": {"split": "region", "target": "los"}},
        {"epochs": 1, "lr": 0.01, "batch_size": 32, "optimizer": "adam"},
    )
    result = run_simulation(study)
    assert result["task"] == "regression" and result["metrics"] == ["mae", "rmse", "r2"]
    weighted = result["final"]["weighted"]
    assert 0.5 < weighted["mae"] < 3.0 and weighted["rmse"] >= weighted["mae"]
    assert result["summary"]["metric"] == "mae" and result["summary"]["lower_is_better"]
    assert "Lower mae is better" in render_report(result)
    assert result.model.predict(np.zeros((4, 37))).shape == (4,)
