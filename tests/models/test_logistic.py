"""Numpy logistic regression: gradients, stability, agreement with scikit-learn, FL terms."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.models.base import LocalTrainSpec
from fedcare.models.logistic import LogisticRegression, bce_from_logits, logistic_loss_and_grad
from fedcare.records.arrays import ArrayRecord

MODEL = LogisticRegression()


def params(d: int = 5, seed: int = 1) -> ArrayRecord:
    rng = np.random.default_rng(seed)
    return ArrayRecord({"weight": rng.normal(size=d), "bias": np.float64(rng.normal())})


def test_gradient_matches_finite_differences(binary_data: Dataset) -> None:
    p = params()
    _, grads = logistic_loss_and_grad(p, binary_data.X, binary_data.y)
    theta, eps = p.flatten(), 1e-6
    numeric = np.empty_like(theta)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = eps
        up = logistic_loss_and_grad(p.unflatten(theta + step), binary_data.X, binary_data.y)[0]
        down = logistic_loss_and_grad(p.unflatten(theta - step), binary_data.X, binary_data.y)[0]
        numeric[i] = (up - down) / (2 * eps)
    analytic = np.append(grads["weight"], grads["bias"])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_loss_is_stable_for_huge_logits() -> None:
    z = np.array([1000.0, -1000.0, 1000.0, -1000.0])
    y = np.array([1, 0, 0, 1])
    assert bce_from_logits(z, y) == pytest.approx(500.0)  # two perfect, two cost 1000 each
    big = ArrayRecord({"weight": np.array([1e4]), "bias": np.float64(0.0)})
    X = np.array([[1.0], [-1.0]])
    probs = MODEL.predict(big, X)
    assert np.all(np.isfinite(probs)) and probs.tolist() == [1.0, 0.0]


def test_matches_scikit_learn_logistic_regression() -> None:
    # sklearn minimizes C * sum(loss) + ||w||^2 / 2; dividing by C * n gives ours with
    # l2 = 1 / (C * n). Both leave the intercept unpenalized.
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    C, n = 0.1, len(y)
    sk = SkLogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(X, y)
    start = MODEL.init_params((X.shape[1],), np.random.default_rng(0))
    spec = LocalTrainSpec(max_steps=3000, lr=1.0, l2=1 / (C * n))
    result = MODEL.fit(start, Dataset(X, y), spec, np.random.default_rng(0))
    np.testing.assert_allclose(result.params["weight"], sk.coef_[0], rtol=0, atol=1e-6)
    assert result.params["bias"] == pytest.approx(sk.intercept_[0], abs=1e-6)
    assert result.num_steps == 3000


def test_init_is_zero_by_default_and_random_with_init_scale() -> None:
    p = MODEL.init_params((4,), np.random.default_rng(0))
    assert p.shapes == {"weight": (4,), "bias": ()}
    assert p.flatten().tolist() == [0.0] * 5 and p["weight"].dtype == np.float64
    model = LogisticRegression(init_scale=0.01)
    a = model.init_params((4,), np.random.default_rng(0))
    assert a == model.init_params((4,), np.random.default_rng(0))
    assert 0 < np.abs(a["weight"]).max() < 0.1 and a["bias"] == 0.0
    with pytest.raises(ModelError, match="init_scale"):
        LogisticRegression(init_scale=-1.0)


def test_images_are_flattened() -> None:
    X = np.random.default_rng(0).normal(size=(6, 1, 2, 3))
    p = MODEL.init_params((1, 2, 3), np.random.default_rng(0))
    assert p.shapes["weight"] == (6,)
    assert MODEL.predict(p, X).tolist() == [0.5] * 6


def test_predict_and_loss(binary_data: Dataset) -> None:
    p = params()
    probs = MODEL.predict(p, binary_data.X)
    assert probs.shape == (len(binary_data),) and probs.dtype == np.float64
    assert np.all((probs > 0) & (probs < 1))
    expected = -np.mean(binary_data.y * np.log(probs) + (1 - binary_data.y) * np.log(1 - probs))
    assert MODEL.loss(p, binary_data) == pytest.approx(expected, rel=1e-12)


def test_fit_reports_samples_steps_and_train_loss(binary_data: Dataset) -> None:
    start = MODEL.init_params((5,), np.random.default_rng(0))
    spec = LocalTrainSpec(epochs=3, batch_size=32, lr=0.5)
    result = MODEL.fit(start, binary_data, spec, np.random.default_rng(0))
    assert result.num_samples == 120 and result.num_steps == 12
    assert result.metrics["train_loss"] == pytest.approx(MODEL.loss(result.params, binary_data))
    assert result.metrics["train_loss"] < np.log(2)


def test_determinism_and_seed_dependence(binary_data: Dataset) -> None:
    start = params()
    spec = LocalTrainSpec(epochs=2, batch_size=16)
    runs = [MODEL.fit(start, binary_data, spec, np.random.default_rng(s)).params for s in (7, 7, 8)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    full = LocalTrainSpec(epochs=2)  # full batch: the seed does not matter
    a = MODEL.fit(start, binary_data, full, np.random.default_rng(1)).params
    assert a == MODEL.fit(start, binary_data, full, np.random.default_rng(2)).params


def test_fit_does_not_mutate_inputs(binary_data: Dataset) -> None:
    X, y, start = binary_data.X.copy(), binary_data.y.copy(), params()
    kept = ArrayRecord(start)
    MODEL.fit(
        start,
        binary_data,
        LocalTrainSpec(epochs=2, batch_size=10, momentum=0.9),
        np.random.default_rng(0),
    )
    assert start == kept
    np.testing.assert_array_equal(binary_data.X, X)
    np.testing.assert_array_equal(binary_data.y, y)


def test_large_prox_keeps_params_near_the_centre(binary_data: Dataset) -> None:
    start = params()
    rng = np.random.default_rng
    free = MODEL.fit(start, binary_data, LocalTrainSpec(epochs=10, lr=0.5), rng(0)).params
    spec = LocalTrainSpec(epochs=10, lr=0.001, prox_mu=500.0)
    held = MODEL.fit(start, binary_data, spec, rng(0)).params
    assert (held - start).norm() < 0.01 * (free - start).norm()


def test_correction_follows_hand_computed_sgd(binary_data: Dataset) -> None:
    start = params()
    corr = ArrayRecord({"weight": np.full(5, 0.2), "bias": np.float64(-0.1)})
    spec = LocalTrainSpec(max_steps=3, lr=0.3, l2=0.05, correction=corr)
    result = MODEL.fit(start, binary_data, spec, np.random.default_rng(0))
    w, b = start["weight"].copy(), float(start["bias"])
    X, y = binary_data.X, binary_data.y
    for _ in range(3):
        r = (1 / (1 + np.exp(-(X @ w + b))) - y) / len(y)
        w, b = w - 0.3 * (X.T @ r + 0.05 * w + 0.2), b - 0.3 * (r.sum() - 0.1)
    np.testing.assert_allclose(result.params["weight"], w, rtol=1e-12)
    assert result.params["bias"] == pytest.approx(b, rel=1e-12)


@pytest.mark.parametrize("where", ["X", "params"])
def test_nan_is_refused_with_a_clear_message(binary_data: Dataset, where: str) -> None:
    start, data = params(), binary_data
    if where == "X":
        X = binary_data.X.copy()
        X[[3, 7], 1] = np.nan
        data = binary_data.with_features(X)
        match = "X contains NaN values in 2 of 120 rows; impute"
    else:
        start = ArrayRecord({"weight": np.array([0, np.nan, 0, 0, 0.0]), "bias": np.float64(0)})
        match = "params array 'weight' contains NaN"
    with pytest.raises(ModelError, match=match):
        MODEL.fit(start, data, LocalTrainSpec(), np.random.default_rng(0))
    with pytest.raises(ModelError, match=match):
        MODEL.predict(start, data.X)


def test_wrong_params_name_the_array(binary_data: Dataset) -> None:
    wrong_shape = ArrayRecord({"weight": np.zeros(4), "bias": np.float64(0)})
    with pytest.raises(ModelError, match=r"'weight' has shape \(4,\), expected \(5,\)"):
        MODEL.fit(wrong_shape, binary_data, LocalTrainSpec(), np.random.default_rng(0))
    missing = ArrayRecord({"weight": np.zeros(5), "intercept": np.float64(0)})
    with pytest.raises(ModelError, match=r"missing arrays \['bias'\].*unexpected.*'intercept'"):
        MODEL.predict(missing, binary_data.X)
    ints = ArrayRecord({"weight": np.zeros(5, dtype=np.int64), "bias": np.float64(0)})
    with pytest.raises(ModelError, match="'weight' has dtype int64"):
        MODEL.loss(ints, binary_data)


def test_labels_must_be_binary(binary_data: Dataset) -> None:
    data = Dataset(X=binary_data.X, y=binary_data.y * 2)
    with pytest.raises(ModelError, match=r"label y must be 0 or 1, found \[2\]"):
        MODEL.fit(params(), data, LocalTrainSpec(), np.random.default_rng(0))
