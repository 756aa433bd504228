"""The PyTorch adapter: params as state dicts, same training rules as the numpy loop."""

from __future__ import annotations

import pickle
from functools import partial
from typing import Any

import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.models.base import LocalTrainSpec
from fedcare.models.cox import CoxPH
from fedcare.models.logistic import LogisticRegression
from fedcare.records.arrays import ArrayRecord

torch = pytest.importorskip("torch")

from fedcare.models.torch import make_torch_adapter  # noqa: E402
from fedcare.models.torch_nets import cnn_small, mlp  # noqa: E402

pytestmark = pytest.mark.torch

LINEAR = make_torch_adapter(partial(mlp, hidden=()), "binary")


def to_torch(p: ArrayRecord) -> ArrayRecord:
    """Numpy logistic/Cox params as the state dict of ``mlp(hidden=())``."""
    bias = np.asarray(p.get("bias", 0.0)).reshape(1)
    return ArrayRecord({"1.weight": p["weight"][None, :], "1.bias": bias}).astype(np.float32)


def numpy_start(d: int = 5) -> ArrayRecord:
    return ArrayRecord({"weight": np.linspace(-0.3, 0.3, d), "bias": np.float64(0.2)})


def images(n: int = 160, seed: int = 0) -> Dataset:
    """Noise images; label 1 has a bright 6×6 patch somewhere in the upper-left quadrant."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 1, 28, 28)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.int64)
    for i in np.flatnonzero(y):
        r, c = rng.integers(2, 12, size=2)
        X[i, 0, r : r + 6, c : c + 6] += 2.0
    return Dataset(X=X, y=y)


def test_init_is_float32_state_dict_deterministic_and_leaves_global_rng() -> None:
    model = make_torch_adapter(cnn_small)
    state = torch.random.get_rng_state()
    p = model.init_params((1, 28, 28), np.random.default_rng(0))
    assert torch.equal(state, torch.random.get_rng_state())
    assert list(p) == list(cnn_small((1, 28, 28)).state_dict())
    assert p.num_params == 105_281 and all(v.dtype == np.float32 for v in p.values())
    assert p == model.init_params((1, 28, 28), np.random.default_rng(0))
    assert p != model.init_params((1, 28, 28), np.random.default_rng(1))


@pytest.mark.parametrize(
    "spec",
    [
        LocalTrainSpec(epochs=2, batch_size=16, lr=0.3, l2=0.05, prox_mu=0.5, momentum=0.9),
        LocalTrainSpec(max_steps=11, batch_size=32, lr=0.05, optimizer="adam", l2=0.01),
    ],
)
def test_matches_the_numpy_loop_on_a_linear_model(
    binary_data: Dataset, spec: LocalTrainSpec
) -> None:
    # The SCAFFOLD correction is mapped to the state-dict names like the params.
    corr = ArrayRecord({"weight": np.linspace(0.1, -0.1, 5), "bias": np.float64(0.05)})
    spec_np = LocalTrainSpec(**{**spec.__dict__, "correction": corr})
    spec_t = LocalTrainSpec(**{**spec.__dict__, "correction": to_torch(corr)})
    ref = LogisticRegression().fit(numpy_start(), binary_data, spec_np, np.random.default_rng(3))
    got = LINEAR.fit(to_torch(numpy_start()), binary_data, spec_t, np.random.default_rng(3))
    np.testing.assert_allclose(got.params.flatten(), to_torch(ref.params).flatten(), atol=2e-5)
    assert got.num_steps == ref.num_steps
    assert got.metrics["train_loss"] == pytest.approx(ref.metrics["train_loss"], abs=1e-5)
    np.testing.assert_allclose(
        LINEAR.predict(got.params, binary_data.X),
        LogisticRegression().predict(ref.params, binary_data.X),
        atol=1e-5,
    )


def test_survival_matches_the_numpy_cox_model(survival_data: Dataset) -> None:
    model = make_torch_adapter(partial(mlp, hidden=()), "survival")
    assert model.task == "survival"
    start = ArrayRecord({"weight": np.array([0.1, 0.0, -0.1, 0.2])})
    spec = LocalTrainSpec(epochs=3, batch_size=20, lr=0.2, l2=0.1)
    ref = CoxPH().fit(start, survival_data, spec, np.random.default_rng(0))
    got = model.fit(to_torch(start), survival_data, spec, np.random.default_rng(0))
    np.testing.assert_allclose(got.params["1.weight"][0], ref.params["weight"], atol=1e-5)
    assert got.params["1.bias"][0] == pytest.approx(0.0, abs=1e-6)  # cancels in the likelihood
    np.testing.assert_allclose(
        model.predict(got.params, survival_data.X),
        survival_data.X @ ref.params["weight"],
        atol=1e-5,
    )
    assert model.loss(got.params, survival_data) == pytest.approx(
        ref.metrics["train_loss"], abs=1e-5
    )


def test_cnn_learns_a_small_image_task() -> None:
    from sklearn.metrics import roc_auc_score

    model = make_torch_adapter(cnn_small)
    train, test = images(192, seed=0), images(96, seed=1)
    p = model.init_params((1, 28, 28), np.random.default_rng(0))
    spec = LocalTrainSpec(epochs=4, batch_size=32, lr=2e-3, optimizer="adam")
    result = model.fit(p, train, spec, np.random.default_rng(0))
    assert result.num_steps == 24
    probs = model.predict(result.params, test.X)
    assert probs.dtype == np.float64 and np.all((probs >= 0) & (probs <= 1))
    assert roc_auc_score(test.y, probs) > 0.9


def test_fit_is_deterministic_and_leaves_the_global_rng() -> None:
    model = make_torch_adapter(partial(mlp, hidden=(8,), dropout=0.3))
    data = images(40).with_features(images(40).X.reshape(40, -1)[:, :20])
    p = model.init_params((20,), np.random.default_rng(0))
    spec = LocalTrainSpec(epochs=2, batch_size=8)
    state = torch.random.get_rng_state()
    runs = [model.fit(p, data, spec, np.random.default_rng(s)).params for s in (5, 5, 6)]
    assert torch.equal(state, torch.random.get_rng_state())
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_max_steps_and_epochs_count_exactly(binary_data: Dataset) -> None:
    p = to_torch(numpy_start())
    rng = np.random.default_rng
    assert (
        LINEAR.fit(p, binary_data, LocalTrainSpec(max_steps=7, batch_size=50), rng(0)).num_steps
        == 7
    )
    assert (
        LINEAR.fit(p, binary_data, LocalTrainSpec(epochs=3, batch_size=50), rng(0)).num_steps == 9
    )


def test_large_prox_keeps_params_near_the_centre() -> None:
    model = make_torch_adapter(partial(mlp, hidden=(8,)))
    data = images(40).with_features(images(40).X.reshape(40, -1)[:, :20])
    p = model.init_params((20,), np.random.default_rng(0))
    free = model.fit(p, data, LocalTrainSpec(epochs=5, lr=0.5), np.random.default_rng(0)).params
    spec = LocalTrainSpec(epochs=5, lr=0.001, prox_mu=500.0)
    held = model.fit(p, data, spec, np.random.default_rng(0)).params
    assert (held - p).norm() < 0.02 * (free - p).norm()


def test_predict_is_batched_without_changing_results(binary_data: Dataset) -> None:
    p = to_torch(numpy_start())
    small = make_torch_adapter(partial(mlp, hidden=()), predict_batch_size=7)
    np.testing.assert_allclose(
        small.predict(p, binary_data.X), LINEAR.predict(p, binary_data.X), rtol=1e-6
    )


def test_buffers_travel_with_the_params(binary_data: Dataset) -> None:
    def with_batchnorm(shape: tuple[int, ...]) -> Any:
        return torch.nn.Sequential(torch.nn.BatchNorm1d(shape[0]), torch.nn.Linear(shape[0], 1))

    model = make_torch_adapter(with_batchnorm)
    p = model.init_params((5,), np.random.default_rng(0))
    assert {"0.running_mean", "0.running_var", "0.num_batches_tracked"} <= set(p)
    out = model.fit(
        p, binary_data, LocalTrainSpec(epochs=1, batch_size=40), np.random.default_rng(0)
    )
    assert out.params["0.num_batches_tracked"] == np.float32(3)
    assert not np.array_equal(out.params["0.running_mean"], p["0.running_mean"])


def test_fit_does_not_mutate_inputs(binary_data: Dataset) -> None:
    X, y, p = binary_data.X.copy(), binary_data.y.copy(), to_torch(numpy_start())
    corr = p.zeros_like()
    LINEAR.fit(
        p,
        binary_data,
        LocalTrainSpec(epochs=2, batch_size=10, prox_mu=0.1, correction=corr),
        np.random.default_rng(0),
    )
    assert p == to_torch(numpy_start()) and corr == p.zeros_like()
    np.testing.assert_array_equal(binary_data.X, X)
    np.testing.assert_array_equal(binary_data.y, y)


def test_validation_messages(binary_data: Dataset) -> None:
    p = to_torch(numpy_start())
    wrong = ArrayRecord({"1.weight": np.zeros((1, 4), np.float32), "1.bias": p["1.bias"]})
    with pytest.raises(ModelError, match=r"params array '1.weight' has shape \(1, 4\), expected"):
        LINEAR.fit(wrong, binary_data, LocalTrainSpec(), np.random.default_rng(0))
    with pytest.raises(ModelError, match=r"missing arrays \['1.bias'\]"):
        LINEAR.predict(ArrayRecord({"1.weight": p["1.weight"]}), binary_data.X)
    nan = ArrayRecord({"1.weight": np.full((1, 5), np.nan, np.float32), "1.bias": p["1.bias"]})
    with pytest.raises(ModelError, match=r"'1\.weight' contains NaN"):
        LINEAR.predict(nan, binary_data.X)
    X = binary_data.X.copy()
    X[0] = np.nan
    with pytest.raises(ModelError, match="X contains NaN values in 1 of 120 rows"):
        LINEAR.fit(p, binary_data.with_features(X), LocalTrainSpec(), np.random.default_rng(0))
    with pytest.raises(ModelError, match=r"not nn\.Module"):
        not_a_module: Any = lambda shape: "no module"  # noqa: E731
        make_torch_adapter(not_a_module).init_params((5,), np.random.default_rng(0))
    with pytest.raises(ModelError, match="cnn_small needs"):
        make_torch_adapter(cnn_small).init_params((784,), np.random.default_rng(0))
    with pytest.raises(ModelError, match="unknown task"):
        make_torch_adapter(cnn_small, "ranking")  # type: ignore[arg-type]


def test_adapter_pickles() -> None:
    model = make_torch_adapter(partial(cnn_small, channels=(4, 8), hidden=16))
    clone = pickle.loads(pickle.dumps(model))
    rng = np.random.default_rng
    assert clone.init_params((1, 28, 28), rng(0)) == model.init_params((1, 28, 28), rng(0))


def test_fits_on_threads_match_sequential_fits() -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = make_torch_adapter(partial(mlp, hidden=(8,), dropout=0.5))
    data = images(40).with_features(images(40).X.reshape(40, -1)[:, :20])
    p = model.init_params((20,), np.random.default_rng(0))
    spec = LocalTrainSpec(epochs=3, batch_size=8)

    def run(seed: int) -> ArrayRecord:
        return model.fit(p, data, spec, np.random.default_rng(seed)).params

    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(run, range(4)))
    assert threaded == [run(seed) for seed in range(4)]
