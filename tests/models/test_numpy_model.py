"""NumpyModel: three numpy functions trained by fedcare's local loop."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from scipy.special import expit

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.evaluation.metrics import compute_metrics
from fedcare.models.base import LocalTrainSpec
from fedcare.models.cox import CoxPH, cox_loss_and_eta_grad
from fedcare.models.logistic import LogisticRegression
from fedcare.models.numpy_model import NumpyModel
from fedcare.records.arrays import ArrayRecord
from tests.models.conftest import make_multilabel, make_regression


def init(shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, Any]:
    return {"weight": rng.normal(0.0, 0.1, size=shape[0]), "bias": np.zeros(())}


def logit_predict(p: Any, X: np.ndarray) -> np.ndarray:
    return np.asarray(expit(X @ p["weight"] + p["bias"]))


def logit_gradient(p: Any, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    err = logit_predict(p, X) - y
    return {"weight": X.T @ err / len(X), "bias": err.mean()}


def cox_init(shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, Any]:
    return {"weight": np.zeros(shape[0])}


def cox_predict(p: Any, X: np.ndarray) -> np.ndarray:
    return np.asarray(X @ p["weight"])


def cox_gradient(p: Any, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    _, eta_grad = cox_loss_and_eta_grad(X @ p["weight"], y[:, 0], y[:, 1])
    return {"weight": X.T @ eta_grad}


LOGISTIC = NumpyModel(init, logit_predict, logit_gradient, "binary", name="numpy logistic")


@pytest.mark.parametrize(
    "spec",
    [
        LocalTrainSpec(epochs=3, batch_size=16, lr=0.3, l2=0.05, prox_mu=0.5, momentum=0.9),
        LocalTrainSpec(max_steps=7, batch_size=50, lr=0.05, optimizer="adam", l2=0.01),
    ],
)
def test_binary_helper_matches_the_built_in_logistic_model(
    binary_data: Dataset, spec: LocalTrainSpec
) -> None:
    start = LOGISTIC.init_params((5,), np.random.default_rng(0))
    corr = ArrayRecord({"weight": np.linspace(0.1, -0.1, 5), "bias": np.float64(0.05)})
    spec = LocalTrainSpec(**{**spec.__dict__, "correction": corr})
    ref = LogisticRegression().fit(start, binary_data, spec, np.random.default_rng(3))
    got = LOGISTIC.fit(start, binary_data, spec, np.random.default_rng(3))
    np.testing.assert_allclose(got.params.flatten(), ref.params.flatten(), atol=1e-12)
    assert got.num_steps == ref.num_steps
    assert got.metrics["train_loss"] == pytest.approx(ref.metrics["train_loss"], rel=1e-9)


def test_survival_helper_receives_event_and_time_and_matches_cox(survival_data: Dataset) -> None:
    model = NumpyModel(cox_init, cox_predict, cox_gradient, "survival")
    start = model.init_params((4,), np.random.default_rng(0))
    spec = LocalTrainSpec(epochs=3, batch_size=20, lr=0.2, l2=0.1)
    ref = CoxPH().fit(start, survival_data, spec, np.random.default_rng(0))
    got = model.fit(start, survival_data, spec, np.random.default_rng(0))
    np.testing.assert_allclose(got.params["weight"], ref.params["weight"], atol=1e-12)
    assert model.loss(got.params, survival_data) == pytest.approx(ref.metrics["train_loss"])


def _multilabel_init(shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, Any]:
    return {"w": np.zeros((shape[0], 3)), "bias": np.zeros(3)}


def _multilabel_predict(p: Any, X: np.ndarray) -> np.ndarray:
    return np.asarray(expit(X @ p["w"] + p["bias"]))


def _multilabel_gradient(p: Any, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    err = (_multilabel_predict(p, X) - y) / y.shape[1]
    return {"w": X.T @ err / len(X), "bias": err.mean(axis=0)}


def test_multilabel_and_regression_learn() -> None:
    train, test = make_multilabel(seed=0), make_multilabel(seed=1)
    model = NumpyModel(_multilabel_init, _multilabel_predict, _multilabel_gradient, "multilabel")
    p = model.init_params((5,), np.random.default_rng(0))
    out = model.fit(
        p, train, LocalTrainSpec(epochs=10, batch_size=16, lr=1.0), np.random.default_rng(0)
    )
    assert out.metrics["train_loss"] < 0.8 * model.loss(p, train)
    assert (
        compute_metrics("multilabel", test, model.predict(out.params, test.X))["macro_auroc"] > 0.85
    )
    reg = NumpyModel(init, cox_predict_with_bias, mse_gradient, "regression", loss=mae_loss)
    data = make_regression()
    q = reg.init_params((5,), np.random.default_rng(0))
    fitted = reg.fit(
        q, data, LocalTrainSpec(epochs=20, batch_size=20, lr=0.05), np.random.default_rng(0)
    )
    mae = compute_metrics("regression", data, reg.predict(fitted.params, data.X))["mae"]
    assert fitted.metrics["train_loss"] == pytest.approx(mae)  # the custom loss: MAE
    assert mae < 0.35


def cox_predict_with_bias(p: Any, X: np.ndarray) -> np.ndarray:
    return np.asarray(X @ p["weight"] + p["bias"])


def mse_gradient(p: Any, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    err = 2.0 * (cox_predict_with_bias(p, X) - y)
    return {"weight": X.T @ err / len(X), "bias": err.mean()}


def mae_loss(p: Any, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(cox_predict_with_bias(p, X) - y)))


def test_pickles_with_module_level_functions(binary_data: Dataset) -> None:
    clone = pickle.loads(pickle.dumps(LOGISTIC))
    p = LOGISTIC.init_params((5,), np.random.default_rng(0))
    assert clone.task == "binary"
    np.testing.assert_array_equal(
        clone.predict(p, binary_data.X), LOGISTIC.predict(p, binary_data.X)
    )


def _wrong_shape(p: Any, X: np.ndarray) -> np.ndarray:
    return np.full((len(X), 2), 0.5)


def _missing_bias(p: Any, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return {"weight": np.zeros_like(p["weight"])}


def test_errors_name_what_is_wrong(binary_data: Dataset) -> None:
    rng = np.random.default_rng(0)
    p = LOGISTIC.init_params((5,), rng)
    with pytest.raises(
        ModelError, match=r"binary predictions must have shape \(120,\), got \(120, 2\)"
    ):
        NumpyModel(init, _wrong_shape, logit_gradient, "binary").predict(p, binary_data.X)
    with pytest.raises(ModelError, match="no gradient for array 'bias'"):
        NumpyModel(init, logit_predict, _missing_bias, "binary").fit(
            p, binary_data, LocalTrainSpec(), rng
        )
    with pytest.raises(ModelError, match="unknown task 'ranking'"):
        NumpyModel(init, logit_predict, logit_gradient, "ranking")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="gradient must be callable, got int"):
        NumpyModel(init, logit_predict, 3, "binary")  # type: ignore[arg-type]
    from fedcare.privacy.dp_sgd import DpSgdSpec

    dp = LocalTrainSpec(dp=DpSgdSpec(max_grad_norm=1.0, delta=1e-5, noise_multiplier=1.0))
    with pytest.raises(ModelError, match="NumpyModel cannot run DP-SGD"):
        LOGISTIC.fit(p, binary_data, dp, rng)
    with pytest.raises(ModelError, match=r"label y must be 0 or 1, found \[2\]"):
        LOGISTIC.loss(p, Dataset(X=binary_data.X, y=binary_data.y * 2))
