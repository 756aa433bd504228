import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.errors import ConfigError, ModelError
from fedcare.models.base import LocalTrainSpec
from fedcare.models.logistic import LogisticRegression
from fedcare.privacy.accounting import DpEvent, rdp_epsilon
from fedcare.privacy.dp_sgd import (
    DpSgdSpec,
    dp_config,
    dp_schedule,
    dp_spec_from_config,
    logistic_dp_sgd,
)


def rows(n: int, d: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(np.float64)
    return Dataset(X=X, y=y)


def test_schedule_matches_the_non_private_loop() -> None:
    assert dp_schedule(100, LocalTrainSpec(epochs=2, batch_size=16)) == (0.16, 14)
    assert dp_schedule(100, LocalTrainSpec(max_steps=5, batch_size=10)) == (0.1, 5)
    assert dp_schedule(50, LocalTrainSpec()) == (1.0, 1)


def test_config_round_trip_and_validation() -> None:
    cfg = dp_config(max_grad_norm=1.0, delta=1e-5, rounds=3, target_epsilon=2.0)
    spec = dp_spec_from_config(cfg)
    assert spec == DpSgdSpec(1.0, 1e-5, target_epsilon=2.0, rounds=3)
    assert dp_spec_from_config({"lr": 0.1}) is None
    with pytest.raises(ConfigError, match="no 'dp_delta'"):
        dp_spec_from_config({"dp_max_grad_norm": 1.0, "dp_noise_multiplier": 1.0})
    with pytest.raises(ConfigError, match="exactly one of noise_multiplier and target_epsilon"):
        DpSgdSpec(1.0, 1e-5)


def test_target_epsilon_is_spent_over_all_rounds() -> None:
    train = LocalTrainSpec(epochs=1, batch_size=20)
    dp = DpSgdSpec(1.0, 1e-5, target_epsilon=1.0, rounds=10)
    event = dp.event(200, train)
    assert (event.sampling_probability, event.count) == (0.1, 10)
    assert rdp_epsilon([event] * 10, 1e-5) == pytest.approx(1.0, abs=0.01)


def test_logistic_epsilon_matches_opacus_rdp_accountant() -> None:
    pytest.importorskip("opacus")
    from opacus.accountants import RDPAccountant

    data = rows(300, 4, 0)
    train = LocalTrainSpec(epochs=2, batch_size=30, lr=0.5)
    spec = LocalTrainSpec(epochs=2, batch_size=30, lr=0.5, dp=DpSgdSpec(1.0, 1e-5, 1.3))
    model = LogisticRegression()
    params = model.init_params((4,), np.random.default_rng(0))
    result = model.fit(params, data, spec, np.random.default_rng(1))
    q, steps = dp_schedule(300, train)
    acc = RDPAccountant()
    acc.history = [(1.3, q, steps)]
    assert result.metrics["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=0.02)
    assert result.num_steps == steps == 20


def test_each_step_moves_at_most_clip_over_expected_batch_plus_noise() -> None:
    # One full-batch step with negligible noise: the data gradient is the mean of per-example
    # gradients each clipped to C, so the step is at most lr * C.
    data = rows(50, 3, 1)
    data = Dataset(X=data.X * 100, y=data.y)  # huge gradients: every row is clipped
    params = LogisticRegression().init_params((3,), np.random.default_rng(0))
    spec = LocalTrainSpec(lr=1.0, dp=DpSgdSpec(0.25, 1e-5, noise_multiplier=1e-9))
    new, event = logistic_dp_sgd(params, data.X, data.y, spec, spec.dp, np.random.default_rng(0))  # type: ignore[arg-type]
    step = np.linalg.norm((new - params).flatten())
    assert event == DpEvent(1e-9, 1.0, 1)
    assert step <= 0.25 + 1e-6
    plain = LogisticRegression().fit(params, data, LocalTrainSpec(lr=1.0), np.random.default_rng(0))
    assert np.linalg.norm((plain.params - params).flatten()) > 4 * 0.25  # clipping mattered


def test_dp_training_still_learns_and_reports_epsilon() -> None:
    data = rows(400, 4, 2)
    model = LogisticRegression()
    params = model.init_params((4,), np.random.default_rng(0))
    spec = LocalTrainSpec(
        epochs=5, batch_size=40, lr=0.5, dp=DpSgdSpec(1.0, 1e-5, noise_multiplier=1.0)
    )
    result = model.fit(params, data, spec, np.random.default_rng(3))
    acc = np.mean((model.predict(result.params, data.X) > 0.5) == data.y)
    assert acc > 0.8
    assert 0 < result.metrics["epsilon"] < 10
    assert result.metrics["dp_noise_multiplier"] == 1.0


def test_dp_sgd_refuses_adam() -> None:
    data = rows(20, 2, 0)
    spec = LocalTrainSpec(optimizer="adam", dp=DpSgdSpec(1.0, 1e-5, noise_multiplier=1.0))
    params = LogisticRegression().init_params((2,), np.random.default_rng(0))
    with pytest.raises(ModelError, match="plain SGD"):
        LogisticRegression().fit(params, data, spec, np.random.default_rng(0))


@pytest.mark.slow
def test_opacus_torch_dp_sgd_reports_its_epsilon() -> None:
    pytest.importorskip("opacus")
    from fedcare.models.registry import build_model

    data = rows(200, 4, 4)
    data = Dataset(X=data.X.astype(np.float32), y=data.y)
    model = build_model({"kind": "torch", "architecture": "mlp", "hidden": [8]})
    params = model.init_params((4,), np.random.default_rng(0))
    spec = LocalTrainSpec(
        epochs=2, batch_size=20, lr=0.5, dp=DpSgdSpec(1.0, 1e-5, noise_multiplier=1.1)
    )
    result = model.fit(params, data, spec, np.random.default_rng(5))
    q, steps = dp_schedule(200, spec)
    expected = rdp_epsilon([DpEvent(1.1, q, steps)], 1e-5)
    assert result.num_steps == steps
    assert result.metrics["epsilon"] == pytest.approx(expected, rel=0.02)
    assert (result.params - params).norm() > 0


def test_real_sites_draw_dp_noise_from_os_entropy_simulated_ones_from_the_seed() -> None:
    from fedcare.data.base import SiteData
    from fedcare.records.messages import Task
    from fedcare.site.runtime import SiteRuntime

    data = SiteData("a", train=rows(60, 3, 0), test=rows(20, 3, 1))
    params = LogisticRegression().init_params((3,), np.random.default_rng(0))
    config = {
        "lr": 0.1,
        "batch_size": 10,
        "seed": 5,
        **dp_config(max_grad_norm=1.0, delta=1e-5, rounds=1, noise_multiplier=1.0),
    }
    task = Task(
        study_id="s",
        round=1,
        site_id="a",
        kind="fit",
        params=params,
        config=config,
        plan={"model": {"kind": "logistic"}},
    )

    def update(simulated: bool) -> np.ndarray:
        reply = SiteRuntime(data, simulated=simulated).fit(task)
        assert "dp_event" in reply.info
        return reply.arrays.flatten()

    np.testing.assert_array_equal(update(True), update(True))
    assert not np.array_equal(update(False), update(False))
