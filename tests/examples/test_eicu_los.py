"""examples/packages/eicu-los-mlp: a torch MLP regressor with the package's own loss."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.evaluation.metrics import compute_metrics
from fedcare.models.base import LocalTrainSpec
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from tests.conftest import require_mirror
from tests.examples.conftest import PACKAGES, load_example

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def _stays(n: int, seed: int) -> Dataset:
    """Skewed 'lengths of stay': 2 days + a linear effect + exponential noise, at least 0.1."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = np.maximum(0.1, 2.0 + X @ np.array([1.0, -0.5, 0.5, 0.0, 0.0]) + rng.exponential(1.0, n))
    return Dataset(X=X, y=y)


def test_the_mlp_learns_the_stays_and_beats_the_median() -> None:
    adapter = load_example("eicu-los-mlp", hidden=[16], init_bias=2.0)
    assert adapter.task == "regression"
    data = _stays(300, seed=0)
    params = adapter.init_params((5,), np.random.default_rng(0))
    assert params.shapes == {
        "1.weight": (16, 5),
        "1.bias": (16,),
        "3.weight": (1, 16),
        "3.bias": (1,),
    }
    np.testing.assert_allclose(params["3.bias"], [2.0])
    spec = LocalTrainSpec(max_steps=300, lr=0.01, batch_size=32, optimizer="adam")
    fitted = adapter.fit(params, data, spec, np.random.default_rng(1))
    predicted = adapter.predict(fitted.params, data.X)
    assert predicted.shape == (300,)
    metrics = compute_metrics("regression", data, predicted)
    median_mae = float(np.mean(np.abs(data.y - np.median(data.y))))
    assert metrics["mae"] < 0.7 * median_mae
    # the L1 loss is what the adapter reports and trains on
    assert fitted.metrics["train_loss"] == pytest.approx(metrics["mae"], rel=1e-4)


def test_the_loss_option_chooses_the_training_loss() -> None:
    data = _stays(64, seed=1)
    losses = {}
    for name in ("l1", "mse", "huber"):
        adapter = load_example("eicu-los-mlp", hidden=[4], loss=name)
        params = adapter.init_params((5,), np.random.default_rng(0))
        losses[name] = adapter.loss(params, data)
    predicted = load_example("eicu-los-mlp", hidden=[4]).predict(params, data.X)
    err = predicted - data.y
    assert losses["l1"] == pytest.approx(np.mean(np.abs(err)), rel=1e-5)
    assert losses["mse"] == pytest.approx(np.mean(err**2), rel=1e-5)
    huber = np.where(np.abs(err) < 1, 0.5 * err**2, np.abs(err) - 0.5)
    assert losses["huber"] == pytest.approx(np.mean(huber), rel=1e-5)


def test_bad_options_are_refused_naming_them() -> None:
    with pytest.raises(ModelError, match=r"loss must be one of \['l1', 'mse', 'huber'\], got 'l2'"):
        load_example("eicu-los-mlp", loss="l2")
    with pytest.raises(ModelError, match="hidden must be a list of integers >= 1, got"):
        load_example("eicu-los-mlp", hidden=[0])
    with pytest.raises(ModelError, match=r"dropout must be in \[0, 1\), got 1.5"):
        load_example("eicu-los-mlp", dropout=1.5)


def test_the_study_file_regresses_length_of_stay() -> None:
    require_mirror()
    study = StudyConfig.from_yaml(PACKAGES / "eicu-los-mlp" / "study.yaml")
    assert study.dataset.options == {"split": "region", "target": "los"}
    result = run_simulation(study.with_overrides(rounds=2))
    assert result["task"] == "regression" and result["metrics"][0] == "mae"
    federated, pooled = result["final"]["unweighted"], result["baselines"]["pooled"]["unweighted"]
    # days: near the typical stay from the start (init_bias 2), never wildly off
    assert 0.8 < federated["mae"] < 2.5 and 0.8 < pooled["mae"] < 2.5
    assert federated["rmse"] >= federated["mae"]
    stays = result.model.predict(np.zeros((4, 37), dtype=np.float32))
    assert stays.shape == (4,) and np.all(np.isfinite(stays))
