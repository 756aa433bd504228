"""The shared local training loop: schedule, update rule, penalties, correction, step counts."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.models._local_sgd import local_sgd, minibatch_schedule
from fedcare.models.base import LocalTrainSpec
from fedcare.records.arrays import ArrayRecord

A = np.array([1.0, -2.0, 0.5])
C = 3.0


def quadratic(
    params: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray, time: np.ndarray | None
) -> tuple[float, dict[str, np.ndarray]]:
    """0.5 * ||w - A||^2 + 0.5 * (bias - C)^2, independent of the data (Hessian = I)."""
    w, b = params["weight"], params["bias"]
    loss = 0.5 * float(np.sum((w - A) ** 2) + (b - C) ** 2)
    return loss, {"weight": w - A, "bias": np.asarray(b - C)}


def least_squares(
    params: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray, time: np.ndarray | None
) -> tuple[float, dict[str, np.ndarray]]:
    r = X @ params["weight"] + params["bias"] - y
    return 0.5 * float(np.mean(r**2)), {"weight": X.T @ r / len(y), "bias": np.asarray(r.mean())}


START = ArrayRecord({"weight": np.array([0.2, 0.1, -0.3]), "bias": np.float64(0.5)})
DATA = Dataset(X=np.zeros((10, 3)), y=np.zeros(10))


def regression_data(n: int = 40) -> Dataset:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 3))
    return Dataset(X=X, y=X @ A + C + 0.1 * rng.normal(size=n))


# Schedule -------------------------------------------------------------------------------------
def test_full_batch_yields_all_rows_once_per_epoch_and_draws_nothing() -> None:
    rng = np.random.default_rng(0)
    batches = list(minibatch_schedule(10, LocalTrainSpec(epochs=3), rng))
    assert batches == [None, None, None]
    assert rng.integers(1000) == np.random.default_rng(0).integers(1000)


def test_minibatches_are_a_permutation_per_epoch() -> None:
    spec = LocalTrainSpec(epochs=2, batch_size=4)
    batches = list(minibatch_schedule(10, spec, np.random.default_rng(0)))
    assert [len(b) for b in batches if b is not None] == [4, 4, 2, 4, 4, 2]
    for epoch in (batches[:3], batches[3:]):
        assert sorted(np.concatenate([b for b in epoch if b is not None])) == list(range(10))


@pytest.mark.parametrize(("batch_size", "max_steps"), [(4, 7), (None, 5), (1, 23), (100, 2)])
def test_max_steps_is_exact_and_cycles_epochs(batch_size: int | None, max_steps: int) -> None:
    spec = LocalTrainSpec(epochs=1, max_steps=max_steps, batch_size=batch_size)
    assert len(list(minibatch_schedule(10, spec, np.random.default_rng(0)))) == max_steps
    result = local_sgd(START, quadratic, DATA, spec, np.random.default_rng(0))
    assert result.num_steps == max_steps


def test_epochs_give_epochs_times_batches_per_epoch() -> None:
    spec = LocalTrainSpec(epochs=3, batch_size=3)
    assert local_sgd(START, quadratic, DATA, spec, np.random.default_rng(0)).num_steps == 12


def test_empty_data_is_refused() -> None:
    with pytest.raises(ModelError, match="no rows"):
        list(minibatch_schedule(0, LocalTrainSpec(), np.random.default_rng(0)))


# Update rule ----------------------------------------------------------------------------------
def reference_sgd(spec: LocalTrainSpec, steps: int, correction: np.ndarray) -> np.ndarray:
    """Hand-written plain/momentum SGD on the flat (w, b) vector of ``quadratic``."""
    theta0 = START.flatten()
    target = np.append(A, C)
    mask = np.array([1.0, 1.0, 1.0, 0.0])  # no L2 on the bias
    theta, buf = theta0.copy(), np.zeros(4)
    for t in range(steps):
        g = (theta - target) + spec.l2 * mask * theta + spec.prox_mu * (theta - theta0)
        g = g + correction
        buf = g if t == 0 else spec.momentum * buf + g
        theta = theta - spec.lr * buf
    return theta


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_update_matches_hand_computed_trajectory(momentum: float) -> None:
    corr = ArrayRecord({"weight": np.array([0.3, -0.1, 0.2]), "bias": np.float64(-0.4)})
    spec = LocalTrainSpec(
        max_steps=7, lr=0.1, momentum=momentum, l2=0.5, prox_mu=0.2, correction=corr
    )
    result = local_sgd(START, quadratic, DATA, spec, np.random.default_rng(0))
    expected = reference_sgd(spec, 7, corr.flatten())
    np.testing.assert_allclose(result.params.flatten(), expected, rtol=0, atol=1e-14)


def test_adam_matches_reference() -> None:
    spec = LocalTrainSpec(max_steps=5, lr=0.05, optimizer="adam", l2=0.1)
    result = local_sgd(START, quadratic, DATA, spec, np.random.default_rng(0))
    theta, m, v = START.flatten(), np.zeros(4), np.zeros(4)
    target, mask = np.append(A, C), np.array([1.0, 1.0, 1.0, 0.0])
    for t in range(1, 6):
        g = theta - target + 0.1 * mask * theta
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
        theta = theta - 0.05 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(result.params.flatten(), theta, rtol=0, atol=1e-14)


def test_correction_shifts_like_a_constant_gradient() -> None:
    # With Hessian I, k SGD steps shift the end point by -c * (1 - (1 - lr)^k) exactly.
    c = ArrayRecord({"weight": np.array([1.0, -2.0, 0.25]), "bias": np.float64(0.5)})
    lr, k = 0.1, 6
    rng = np.random.default_rng
    plain = local_sgd(START, quadratic, DATA, LocalTrainSpec(max_steps=k, lr=lr), rng(0))
    spec = LocalTrainSpec(max_steps=k, lr=lr, correction=c)
    shifted = local_sgd(START, quadratic, DATA, spec, rng(0))
    diff = shifted.params.flatten() - plain.params.flatten()
    np.testing.assert_allclose(diff, -c.flatten() * (1 - (1 - lr) ** k), rtol=1e-12)


def test_l2_skips_the_bias() -> None:
    spec = LocalTrainSpec(max_steps=1, lr=1.0, l2=1.0)
    zero_loss = ArrayRecord({"weight": A, "bias": np.float64(C)})  # data gradient is 0
    out = local_sgd(zero_loss, quadratic, DATA, spec, np.random.default_rng(0)).params
    np.testing.assert_allclose(out["weight"], 0.0)  # w - 1.0 * (1.0 * w)
    assert out["bias"] == C


def test_large_prox_keeps_params_at_the_centre() -> None:
    data = regression_data()
    free = local_sgd(
        START, least_squares, data, LocalTrainSpec(epochs=20, lr=0.1), np.random.default_rng(0)
    )
    spec = LocalTrainSpec(epochs=20, lr=0.001, prox_mu=900.0)
    held = local_sgd(START, least_squares, data, spec, np.random.default_rng(0))
    assert (free.params - START).norm() > 1.0
    assert (held.params - START).norm() < 0.02 * (free.params - START).norm()


def test_final_loss_is_the_full_data_loss_of_the_result() -> None:
    data = regression_data()
    result = local_sgd(
        START, least_squares, data, LocalTrainSpec(epochs=2, batch_size=8), np.random.default_rng(0)
    )
    assert result.loss == least_squares(result.params, data.X, data.y, None)[0]


def test_minibatch_training_converges_and_is_deterministic() -> None:
    data = regression_data()
    spec = LocalTrainSpec(epochs=30, lr=0.1, batch_size=8)
    a = local_sgd(START, least_squares, data, spec, np.random.default_rng(1))
    b = local_sgd(START, least_squares, data, spec, np.random.default_rng(1))
    c = local_sgd(START, least_squares, data, spec, np.random.default_rng(2))
    assert a.params == b.params
    assert a.params != c.params
    np.testing.assert_allclose(a.params["weight"], A, atol=0.1)


def test_output_keeps_names_order_and_dtypes() -> None:
    start = ArrayRecord({"bias": np.float32(0.0), "weight": np.zeros(3, dtype=np.float32)})
    out = local_sgd(start, quadratic, DATA, LocalTrainSpec(), np.random.default_rng(0)).params
    assert list(out) == ["bias", "weight"]
    assert out["weight"].dtype == np.float32 and out["bias"].shape == ()


def test_inputs_are_not_mutated() -> None:
    data = regression_data()
    X, y = data.X.copy(), data.y.copy()
    corr = ArrayRecord({"weight": np.ones(3), "bias": np.float64(1.0)})
    spec = LocalTrainSpec(epochs=2, batch_size=4, prox_mu=0.1, correction=corr, momentum=0.5)
    before = ArrayRecord(START)
    local_sgd(START, least_squares, data, spec, np.random.default_rng(0))
    assert before == START and corr == ArrayRecord({"weight": np.ones(3), "bias": np.float64(1.0)})
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, y)


def test_correction_with_wrong_structure_names_the_array() -> None:
    corr = ArrayRecord({"weight": np.ones(4), "bias": np.float64(1.0)})
    with pytest.raises(ModelError, match=r"correction.*'weight' has shape \(4,\)"):
        local_sgd(START, quadratic, DATA, LocalTrainSpec(correction=corr), np.random.default_rng(0))
    corr = ArrayRecord({"weight": np.ones(3)})
    with pytest.raises(ModelError, match=r"missing arrays \['bias'\]"):
        local_sgd(START, quadratic, DATA, LocalTrainSpec(correction=corr), np.random.default_rng(0))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_divergence_is_reported() -> None:
    data = Dataset(X=np.full((4, 3), 1e3), y=np.ones(4))
    with pytest.raises(ModelError, match=r"diverged.*lower the learning rate"):
        local_sgd(
            START,
            least_squares,
            data,
            LocalTrainSpec(max_steps=500, lr=10.0),
            np.random.default_rng(0),
        )
