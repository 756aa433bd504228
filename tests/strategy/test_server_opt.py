"""The plain server SGD step, block by block: bitwise the whole-array step, no moment kept."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.aggregation.blockwise import BLOCK
from fedcare.records import ArrayRecord, Reply
from fedcare.strategy import FedAvg, FedAvgM
from fedcare.strategy.checkpoint import state_from_record, state_to_record
from fedcare.strategy.server_opt import SGD, sgd_step

SHAPES = {"big": (BLOCK + 4_321,), "matrix": (517, 9), "bias": (11,), "scalar": ()}


def model(rng: np.random.Generator, dtype: type, spread: float) -> ArrayRecord:
    return ArrayRecord(
        {
            k: (rng.normal(size=s) * 10.0 ** rng.uniform(-spread, spread, size=s)).astype(dtype)
            for k, s in SHAPES.items()
        },
        copy=False,
    )


def old_step(params: ArrayRecord, delta: ArrayRecord, lr: float) -> ArrayRecord:
    """What FedOpt did before: ``m = delta in float64; step = lr * m; (p + step) as p``."""
    step = delta.astype(np.float64).scale(lr)
    return params.zip_map(step, lambda p, s: (p + s).astype(p.dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lr", [1.0, 0.7, 1e-3])
def test_sgd_apply_is_bitwise_the_whole_array_step(dtype: type, lr: float) -> None:
    rng = np.random.default_rng(int(lr * 1000))
    params, delta = model(rng, dtype, 3), model(rng, dtype, 6)
    sgd = SGD(lr=lr)
    new, state = sgd.apply(params, delta, sgd.init(params))
    expected = old_step(params, delta, lr)
    for k in SHAPES:
        assert new[k].dtype == params[k].dtype and new[k].shape == params[k].shape
        assert new[k].tobytes() == expected[k].tobytes(), k
    assert state.step == 1 and len(state.m) == 0 and len(state.v) == 0
    step, _ = sgd.update(delta, sgd.init(params))  # the step alone, as before
    np.testing.assert_array_equal(step["big"], delta["big"].astype(np.float64) * lr)


def test_sgd_step_of_empty_and_scalar_arrays() -> None:
    assert sgd_step(np.zeros(0, np.float32), np.zeros(0, np.float32), 1.0).shape == (0,)
    out = sgd_step(np.array(1.5, np.float32), np.array(0.25, np.float32), 2.0)
    assert out.shape == () and out.dtype == np.float32 and float(out) == 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fedavg_round_is_bitwise_the_whole_array_formulas(dtype: type) -> None:
    rng = np.random.default_rng(7)
    params = model(rng, dtype, 2)
    updates = [(model(rng, dtype, 4), n) for n in (120, 7, 3001, 64)]
    # ascending norms: the outlier screening (which passes the largest last) keeps this order
    updates.sort(key=lambda u: u[0].norm())
    replies = [
        Reply("s", 1, f"site{i}", "fit", arrays=u, num_samples=n)
        for i, (u, n) in enumerate(updates)
    ]
    strategy = FedAvg(server_lr=0.5)
    state, measurements = strategy.aggregate_fit(
        1, strategy.init_state(params), iter(replies), num_available=4
    )
    total = float(sum(n for _, n in updates))
    sums = {k: np.zeros(s, dtype=np.float64) for k, s in SHAPES.items()}
    for u, n in updates:
        for k, acc in sums.items():
            acc += float(n) * u[k]
    delta = ArrayRecord({k: (acc / total).astype(dtype) for k, acc in sums.items()}, copy=False)
    expected = old_step(params, delta, 0.5)
    for k in SHAPES:
        assert state.params[k].tobytes() == expected[k].tobytes(), k
    assert measurements["update_norm"] == delta.norm()


def test_fedavg_checkpoints_no_moment_and_reads_old_checkpoints_that_had_one() -> None:
    strategy = FedAvg()
    params = ArrayRecord({"w": np.arange(3.0)})
    state = strategy.init_state(params)
    record, header = state_to_record(strategy, state)
    assert list(record) == ["params/w"]
    old = record.merged(ArrayRecord({"optimizer/m/w": np.ones(3)}))  # written before
    restored = state_from_record(FedAvg(), old, header)
    assert restored.params == params and len(restored.optimizer.m) == 0


def test_server_momentum_still_keeps_its_moment() -> None:
    strategy = FedAvgM(momentum=0.5)
    params = ArrayRecord({"w": np.zeros(2)})
    reply = Reply("s", 1, "a", "fit", arrays=ArrayRecord({"w": np.ones(2)}), num_samples=1)
    state = strategy.init_state(params)
    for _ in range(2):
        state, _ = strategy.aggregate_fit(1, state, [reply], num_available=1)
    np.testing.assert_array_equal(state.optimizer.m["w"], [1.5, 1.5])  # 0.5 * 1 + 1
    np.testing.assert_array_equal(state.params["w"], [2.5, 2.5])  # 1 + 1.5


def test_the_sgd_step_into_the_updates_own_memory_is_bitwise_the_same() -> None:
    """FedAvg's round writes the new params into the aggregated update's memory (one model
    less at the coordinator): the same bits as into a new array, and the update's norm is
    taken before."""
    from fedcare.strategy.server_opt import SGD, sgd_step

    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float64):
        param = rng.normal(size=(3, 1_000_003 // 3)).astype(dtype)
        delta = rng.normal(size=param.shape).astype(dtype)
        fresh = sgd_step(param, delta, 0.7)
        consumed = delta.copy()
        into = sgd_step(param, consumed, 0.7, into=consumed.reshape(-1))
        assert into.tobytes() == fresh.tobytes() and np.shares_memory(into, consumed)
    params = ArrayRecord({"w": np.ones(4, np.float32)})
    update = ArrayRecord({"w": np.full(4, 0.5, np.float32)})
    opt = SGD(lr=1.0)
    new, _ = opt.apply(params, update, opt.init(params), consume=True)
    assert new["w"].tolist() == [1.5] * 4 and np.shares_memory(new["w"], update["w"])
    assert not new["w"].flags.writeable
