"""examples/packages/heart-severity-sklearn: a 5-class scikit-learn estimator in a package."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.evaluation.metrics import compute_metrics
from fedcare.models.base import LocalTrainSpec
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from tests.conftest import require_mirror
from tests.examples.conftest import PACKAGES, load_example


def _grades(n: int, seed: int) -> Dataset:
    """Unbalanced 5-class data: grade 0 half the rows, grade 4 the fewest."""
    rng = np.random.default_rng(seed)
    y = rng.choice(5, size=n, p=[0.5, 0.2, 0.13, 0.12, 0.05])
    X = rng.normal(size=(n, 6)) + 0.8 * np.eye(5, 6)[y] + 0.3 * y[:, None]
    return Dataset(X=X, y=y.astype(np.int64))


def test_rounds_of_few_iterations_reach_the_full_fit() -> None:
    adapter = load_example("heart-severity-sklearn", max_iter=5)
    data = _grades(300, seed=0)
    rng = np.random.default_rng(0)
    params = adapter.init_params((6,), rng)
    assert params.shapes == {"coef": (5, 6), "intercept": (5,)}
    for _ in range(30):  # one site: each round continues from the last
        params = adapter.fit(params, data, LocalTrainSpec(), rng).params
    full = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000, tol=1e-10)
    full.fit(data.X, data.y)
    prob = adapter.predict(params, data.X)
    assert prob.shape == (300, 5)
    np.testing.assert_allclose(prob, full.predict_proba(data.X), atol=1e-3)
    metrics = compute_metrics("multiclass", data, prob)
    assert metrics["macro_auroc"] > 0.8 and metrics["balanced_accuracy"] > 0.4


def test_a_site_without_every_grade_still_returns_all_five_rows() -> None:
    adapter = load_example("heart-severity-sklearn")
    data = _grades(200, seed=1)
    few = data.take(np.flatnonzero(data.y <= 2))
    params = adapter.init_params((6,), np.random.default_rng(0))
    fitted = adapter.fit(params, few, LocalTrainSpec(), np.random.default_rng(1))
    assert fitted.params.shapes == {"coef": (5, 6), "intercept": (5,)}
    np.testing.assert_array_equal(fitted.params["coef"][3:], 0.0)  # grades 3, 4 kept as given
    assert np.abs(fitted.params["coef"][:3]).sum() > 0


def test_the_sgd_estimator_trains_by_minibatch() -> None:
    adapter = load_example("heart-severity-sklearn", estimator="sgd", class_weight=None)
    data = _grades(120, seed=2)
    params = adapter.init_params((6,), np.random.default_rng(0))
    spec = LocalTrainSpec(epochs=3, batch_size=40)
    fitted = adapter.fit(params, data, spec, np.random.default_rng(3))
    assert fitted.num_steps == 9
    assert fitted.metrics["train_loss"] < adapter.loss(params, data)


def test_bad_options_are_refused_naming_them() -> None:
    with pytest.raises(ModelError, match=r"estimator must be one of \['logistic', 'sgd'\]"):
        load_example("heart-severity-sklearn", estimator="forest")
    with pytest.raises(ModelError, match="set class_weight: null with estimator: sgd"):
        load_example("heart-severity-sklearn", estimator="sgd")
    with pytest.raises(ModelError, match="class_weight must be 'balanced' or null, got 'auto'"):
        load_example("heart-severity-sklearn", class_weight="auto")


def test_the_study_file_trains_fedavg_pooled_and_local_models() -> None:
    require_mirror()
    study = StudyConfig.from_yaml(PACKAGES / "heart-severity-sklearn" / "study.yaml")
    assert study.dataset.options["target"] == "severity"
    result = run_simulation(study.with_overrides(rounds=5))
    assert result["task"] == "multiclass" and result["study"]["model"]["name"] == (
        "heart_severity_sklearn"
    )
    assert sorted(result["baselines"]["local"]) == ["cleveland", "hungary", "switzerland", "va"]
    federated = result["final"]["unweighted"]
    assert 0.65 < federated["macro_auroc"] < 0.9 and federated["balanced_accuracy"] > 0.3
    assert result["baselines"]["pooled"]["unweighted"]["macro_auroc"] > 0.65
    model = result.model
    assert model.params.shapes["coef"][0] == 5
    prob = model.predict(np.zeros((3, model.params.shapes["coef"][1])))
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-9)
