"""examples/packages/numpy-bare: softmax regression as three numpy functions (NumpyModel)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.evaluation.metrics import compute_metrics
from fedcare.models.base import LocalTrainSpec
from fedcare.records.arrays import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from tests.conftest import require_mirror
from tests.examples.conftest import PACKAGES, load_example


def _three_classes(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    logits = X @ rng.normal(0.0, 1.5, size=(4, 3)) + np.array([0.3, 0.0, -0.3])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    return Dataset(X=X, y=y.astype(np.int64))


def test_full_batch_training_reaches_scikit_learns_multinomial_fit() -> None:
    adapter = load_example("numpy-bare", num_classes=3)
    data = _three_classes(400, seed=0)
    rng = np.random.default_rng(0)
    params = adapter.init_params((4,), rng)
    spec = LocalTrainSpec(max_steps=3000, lr=0.5, momentum=0.9, batch_size=None)
    fitted = adapter.fit(params, data, spec, rng)
    assert fitted.num_steps == 3000 and fitted.num_samples == 400
    reference = LogisticRegression(C=1e6, max_iter=5000, tol=1e-10).fit(data.X, data.y)
    prob = adapter.predict(fitted.params, data.X)
    assert prob.shape == (400, 3)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(prob, reference.predict_proba(data.X), atol=2e-3)
    metrics = compute_metrics("multiclass", data, prob)
    assert metrics["macro_auroc"] > 0.8 and fitted.metrics["train_loss"] == pytest.approx(
        metrics["log_loss"], rel=1e-6
    )


def test_minibatch_steps_and_the_fedprox_term() -> None:
    adapter = load_example("numpy-bare", num_classes=3)
    data = _three_classes(100, seed=1)
    params = adapter.init_params((4,), np.random.default_rng(1))
    free = adapter.fit(
        params, data, LocalTrainSpec(epochs=2, lr=0.5, batch_size=30), np.random.default_rng(2)
    )
    assert free.num_steps == 2 * 4
    held = adapter.fit(
        params,
        data,
        LocalTrainSpec(epochs=2, lr=0.5, batch_size=30, prox_mu=1.9),
        np.random.default_rng(2),
    )
    moved = np.linalg.norm(free.params["W"] - params["W"])
    assert np.linalg.norm(held.params["W"] - params["W"]) < 0.6 * moved


def test_the_gradient_matches_finite_differences() -> None:
    adapter = load_example("numpy-bare", num_classes=3, init_scale=0.5)
    data = _three_classes(30, seed=3)
    params = adapter.init_params((4,), np.random.default_rng(5))
    grad = adapter.gradient_fn(dict(params), data.X, data.y)  # type: ignore[attr-defined]
    eps = 1e-6
    for name, index in (("W", (2, 1)), ("bias", (0,))):
        up, down = dict(params), dict(params)
        up[name], down[name] = params[name].copy(), params[name].copy()
        up[name][index] += eps
        down[name][index] -= eps
        numeric = (adapter.loss(ArrayRecord(up), data) - adapter.loss(ArrayRecord(down), data)) / (
            2 * eps
        )
        assert grad[name][index] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ModelError, match="num_classes must be an integer >= 2, got 1"):
        load_example("numpy-bare", num_classes=1)
    adapter = load_example("numpy-bare", num_classes=2)
    data = _three_classes(20, seed=2)
    params = adapter.init_params((4,), np.random.default_rng(0))
    with pytest.raises(ModelError, match=r"labels must be 0 \.\. 1, got 0 \.\. 2"):
        adapter.fit(params, data, LocalTrainSpec(), np.random.default_rng(0))


def test_the_study_file_grades_heart_disease_severity() -> None:
    require_mirror()
    study = StudyConfig.from_yaml(PACKAGES / "numpy-bare" / "study.yaml")
    result = run_simulation(study.with_overrides(rounds=5))
    assert result["study"]["model"]["name"] == "numpy_softmax"
    assert result.model.params.shapes == {"W": (13, 5), "bias": (5,)}
    federated = result["final"]["unweighted"]
    assert 0.65 < federated["macro_auroc"] < 0.9
    # the pooled model trains on every hospital's rows, and is at least as good
    assert result["baselines"]["pooled"]["unweighted"]["log_loss"] < federated["log_loss"] + 0.05
