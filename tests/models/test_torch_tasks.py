"""The torch adapter on multiclass, multilabel and regression tasks; custom loss and steps."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
from scipy.special import softmax

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.evaluation.metrics import compute_metrics
from fedcare.models.base import LocalTrainSpec
from fedcare.models.numpy_model import NumpyModel
from fedcare.records.arrays import ArrayRecord
from tests.models.conftest import make_multiclass, make_multilabel, make_regression

torch = pytest.importorskip("torch")

from fedcare.models.torch import make_torch_adapter  # noqa: E402
from fedcare.models.torch_nets import mlp  # noqa: E402

pytestmark = pytest.mark.torch


def _linear_init(shape: tuple[int, ...], rng: np.random.Generator, k: int) -> dict[str, Any]:
    return {"1.weight": rng.normal(0, 0.1, size=(k, shape[0])), "1.bias": np.zeros(k)}


def _softmax_predict(p: Any, X: np.ndarray) -> np.ndarray:
    return np.asarray(softmax(X @ p["1.weight"].T + p["1.bias"], axis=1))


def _softmax_gradient(p: Any, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    err = _softmax_predict(p, X)
    err[np.arange(len(y)), y] -= 1.0
    return {"1.weight": err.T @ X / len(X), "1.bias": err.mean(axis=0)}


def _value_predict(p: Any, X: np.ndarray) -> np.ndarray:
    return np.asarray((X @ p["1.weight"].T + p["1.bias"]).reshape(-1))


def _mse_gradient(p: Any, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    err = 2.0 * (_value_predict(p, X) - y)
    return {"1.weight": (err @ X / len(X))[None, :], "1.bias": np.array([err.mean()])}


CASES = {
    "multiclass": (make_multiclass, 4, "macro_auroc", 0.85),
    "multilabel": (make_multilabel, 3, "macro_auroc", 0.85),
    "regression": (make_regression, 1, "r2", 0.8),
}


@pytest.mark.parametrize("task", list(CASES))
def test_each_task_learns_and_predicts_its_output(task: Any) -> None:
    make, k, metric, floor = CASES[task]
    train, test = make(seed=0), make(seed=1)
    model = make_torch_adapter(partial(mlp, hidden=(16,), outputs=k), task)
    assert model.task == task
    p = model.init_params((5,), np.random.default_rng(0))
    spec = LocalTrainSpec(epochs=20, batch_size=32, lr=0.01, optimizer="adam")
    before = model.loss(p, train)
    result = model.fit(p, train, spec, np.random.default_rng(0))
    assert result.metrics["train_loss"] == pytest.approx(model.loss(result.params, train))
    assert result.metrics["train_loss"] < 0.6 * before
    pred = model.predict(result.params, test.X)
    assert pred.dtype == np.float64
    assert pred.shape == ((len(test),) if task == "regression" else (len(test), k))
    if task == "multiclass":
        np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-9)
    assert compute_metrics(task, test, pred)[metric] > floor


@pytest.mark.parametrize(
    "spec",
    [
        LocalTrainSpec(epochs=2, batch_size=16, lr=0.3, l2=0.05, prox_mu=0.5, momentum=0.9),
        LocalTrainSpec(max_steps=9, batch_size=40, lr=0.05, optimizer="adam", l2=0.01),
    ],
)
@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_linear_torch_model_matches_the_numpy_helper(task: Any, spec: LocalTrainSpec) -> None:
    # Same update rule on both sides: minibatches from rng, L2 off biases, FedProx, SCAFFOLD.
    k = 4 if task == "multiclass" else 1
    data = make_multiclass() if task == "multiclass" else make_regression()
    predict, gradient = (
        (_softmax_predict, _softmax_gradient)
        if task == "multiclass"
        else (_value_predict, _mse_gradient)
    )
    reference = NumpyModel(partial(_linear_init, k=k), predict, gradient, task)
    start = reference.init_params((5,), np.random.default_rng(0))
    corr = ArrayRecord({"1.weight": np.full((k, 5), 0.02), "1.bias": np.full(k, -0.01)})
    spec = LocalTrainSpec(**{**spec.__dict__, "correction": corr})
    ref = reference.fit(start, data, spec, np.random.default_rng(3))
    model = make_torch_adapter(partial(mlp, hidden=(), outputs=k), task)
    spec_t = LocalTrainSpec(**{**spec.__dict__, "correction": corr.astype(np.float32)})
    got = model.fit(start.astype(np.float32), data, spec_t, np.random.default_rng(3))
    assert got.num_steps == ref.num_steps
    np.testing.assert_allclose(got.params.flatten(), ref.params.flatten(), atol=5e-5)
    assert got.metrics["train_loss"] == pytest.approx(ref.metrics["train_loss"], rel=1e-4)
    np.testing.assert_allclose(
        model.predict(got.params, data.X), reference.predict(ref.params, data.X), atol=1e-4
    )


def _l1(outputs: Any, target: Any) -> Any:
    return torch.nn.functional.l1_loss(outputs, target)


def _frozen(parameters: list[Any], spec: LocalTrainSpec) -> Any:
    return torch.optim.SGD(parameters, lr=0.0)


def _mse_step(module: Any, batch: tuple[Any, Any], spec: LocalTrainSpec) -> Any:
    inputs, target = batch
    return torch.nn.functional.mse_loss(module(inputs).reshape(-1), target)


def _zero_outputs(module: Any, inputs: Any) -> Any:
    return module(inputs) * 0.0


def test_custom_loss_optimizer_train_step_and_eval_step() -> None:
    data = make_regression()
    spec = LocalTrainSpec(epochs=10, batch_size=32, lr=0.2)
    linear = partial(mlp, hidden=())
    p = make_torch_adapter(linear, "regression").init_params((5,), np.random.default_rng(0))
    # loss: trains and evaluates on L1, so loss() is the MAE of the predictions
    l1 = make_torch_adapter(linear, "regression", loss=_l1)
    fitted = l1.fit(p, data, spec, np.random.default_rng(0)).params
    mae = compute_metrics("regression", data, l1.predict(fitted, data.X))["mae"]
    assert l1.loss(fitted, data) == pytest.approx(mae, rel=1e-5)
    assert mae < 0.5 * compute_metrics("regression", data, l1.predict(p, data.X))["mae"]
    # optimizer: an lr-0 optimizer overrides spec.lr, so nothing moves
    frozen = make_torch_adapter(linear, "regression", optimizer=_frozen)
    assert frozen.fit(p, data, spec, np.random.default_rng(0)).params == p
    # train_step: the default step written out gives the default result
    default = make_torch_adapter(linear, "regression").fit(p, data, spec, np.random.default_rng(0))
    stepped = make_torch_adapter(linear, "regression", train_step=_mse_step)
    assert stepped.fit(p, data, spec, np.random.default_rng(0)).params == default.params
    # eval_step: zero logits give uniform class probabilities
    multi = make_torch_adapter(
        partial(mlp, hidden=(), outputs=3), "multiclass", eval_step=_zero_outputs
    )
    q = multi.init_params((5,), np.random.default_rng(0))
    np.testing.assert_allclose(multi.predict(q, data.X), np.full((len(data), 3), 1 / 3))


def test_fit_is_deterministic_for_every_task() -> None:
    data = make_multilabel(n=60)
    model = make_torch_adapter(partial(mlp, hidden=(8,), dropout=0.2, outputs=3), "multilabel")
    p = model.init_params((5,), np.random.default_rng(0))
    spec = LocalTrainSpec(epochs=2, batch_size=16)
    runs = [model.fit(p, data, spec, np.random.default_rng(s)).params for s in (4, 4, 5)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def _bad_step(module: Any, batch: tuple[Any, Any], spec: LocalTrainSpec) -> Any:
    return module(batch[0])


def test_task_errors_name_what_is_wrong() -> None:
    rng = np.random.default_rng(0)
    multi, reg = make_multiclass(n=40), make_regression(n=40)
    one = make_torch_adapter(partial(mlp, hidden=()), "multiclass")
    with pytest.raises(
        ModelError, match=r"multiclass module must return \(n, K\) logits with K >= 2"
    ):
        one.predict(one.init_params((5,), rng), multi.X)
    three = make_torch_adapter(partial(mlp, hidden=(), outputs=3), "regression")
    with pytest.raises(ModelError, match="must return one output per example, got shape"):
        three.predict(three.init_params((5,), rng), reg.X)
    small = make_torch_adapter(partial(mlp, hidden=(), outputs=3), "multiclass")
    with pytest.raises(ModelError, match="class index 3 is out of range for 3 outputs"):
        small.loss(small.init_params((5,), rng), multi)
    with pytest.raises(
        ModelError, match=r"multiclass label y must be class indices 0..K-1, found \[-4, -3"
    ):
        small.loss(small.init_params((5,), rng), Dataset(X=multi.X, y=-multi.y - 1))
    labels = make_torch_adapter(partial(mlp, hidden=(), outputs=3), "multilabel")
    with pytest.raises(ModelError, match=r"multilabel y must have shape \(n, L\), got \(40,\)"):
        labels.loss(labels.init_params((5,), rng), multi)
    bad = make_torch_adapter(partial(mlp, hidden=()), "regression", train_step=_bad_step)
    with pytest.raises(ModelError, match="the training loss must be a scalar tensor"):
        bad.fit(bad.init_params((5,), rng), reg, LocalTrainSpec(), rng)
    with pytest.raises(ModelError, match="optimizer must be callable or None, got int"):
        make_torch_adapter(mlp, "regression", optimizer=3)  # type: ignore[arg-type]


def test_dp_sgd_runs_for_multiclass_and_refuses_survival() -> None:
    pytest.importorskip("opacus")
    from fedcare.privacy.dp_sgd import DpSgdSpec

    data = make_multiclass(n=120)
    model = make_torch_adapter(partial(mlp, hidden=(), outputs=4), "multiclass")
    p = model.init_params((5,), np.random.default_rng(0))
    dp = DpSgdSpec(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
    spec = LocalTrainSpec(epochs=1, batch_size=30, lr=0.1, dp=dp)
    out = model.fit(p, data, spec, np.random.default_rng(0))
    assert out.num_steps == 4 and 0 < out.metrics["epsilon"] < 50
    assert out.params != p and out.params.all_finite()
    surv = make_torch_adapter(partial(mlp, hidden=()), "survival")
    from tests.models.conftest import make_survival

    sdata = make_survival()
    with pytest.raises(ModelError, match="DP-SGD cannot be combined with a survival loss"):
        surv.fit(
            surv.init_params((4,), np.random.default_rng(0)), sdata, spec, np.random.default_rng(0)
        )
