import numpy as np
import pytest

from fedcare.errors import ConfigError
from fedcare.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    RoundConfig,
    build_strategy,
    run_rounds,
)

from .helpers import PARAMS, fixed_grid

# Site a: update [1, 0] on 1 row; site b: update [0, 2] on 3 rows. Weighted mean [0.25, 1.5].
UPDATES = {"a": ([1.0, 0.0], 1), "b": ([0.0, 2.0], 3)}
MEAN = np.array([0.25, 1.5])


def run(strategy, rounds: int = 1):
    cfg = RoundConfig(study_id="s", num_rounds=rounds, seed=0, evaluate_every=0)
    state, records = run_rounds(fixed_grid(UPDATES), strategy, strategy.init_state(PARAMS), cfg)
    return state, records


def test_fedavg_is_the_sample_weighted_mean() -> None:
    state, records = run(FedAvg())
    np.testing.assert_allclose(state.params["w"], MEAN)
    assert records[0].fit["num_contributions"] == 2
    state, _ = run(FedAvg(server_lr=2.0), rounds=2)
    np.testing.assert_allclose(state.params["w"], 4 * MEAN)


def test_fedavgm_accumulates_momentum() -> None:
    state, _ = run(FedAvgM(momentum=0.5), rounds=2)
    # m1 = d, x1 = d; m2 = 0.5 d + d = 1.5 d; x2 = 2.5 d
    np.testing.assert_allclose(state.params["w"], 2.5 * MEAN)


def adaptive_by_hand(kind: str, rounds: int, lr=0.1, b1=0.9, b2=0.99, tau=1e-3) -> np.ndarray:
    x, m, v = np.zeros(2), np.zeros(2), np.full(2, tau**2)
    d = MEAN
    for _ in range(rounds):
        m = b1 * m + (1 - b1) * d
        if kind == "adam":
            v = b2 * v + (1 - b2) * d**2
        elif kind == "yogi":
            v = v - (1 - b2) * d**2 * np.sign(v - d**2)
        else:
            v = v + d**2
        x = x + lr * m / (np.sqrt(v) + tau)
    return x


@pytest.mark.parametrize(
    ("cls", "kind"), [(FedAdam, "adam"), (FedYogi, "yogi"), (FedAdagrad, "adagrad")]
)
def test_adaptive_server_optimizers_by_hand(cls, kind) -> None:
    state, _ = run(cls(server_lr=0.1), rounds=3)
    np.testing.assert_allclose(state.params["w"], adaptive_by_hand(kind, 3), rtol=1e-12)


def test_fedprox_sends_mu_to_sites() -> None:
    grid = fixed_grid(UPDATES, record=True)
    strategy = FedProx(mu=0.3, train={"lr": 0.05})
    cfg = RoundConfig(study_id="s", num_rounds=1, seed=0, evaluate_every=0)
    run_rounds(grid, strategy, strategy.init_state(PARAMS), cfg)
    fit_tasks = [t for t in grid.wire if getattr(t, "kind", None) == "fit" and hasattr(t, "plan")]
    assert {t.config["prox_mu"] for t in fit_tasks} == {0.3}
    assert {t.config["lr"] for t in fit_tasks} == {0.05}


def test_registry_builds_by_name_and_names_bad_options() -> None:
    assert isinstance(build_strategy("fedyogi", {"server_lr": 0.5}), FedYogi)
    with pytest.raises(ConfigError, match=r"unknown strategy 'fedsgd'.*fedavg"):
        build_strategy("fedsgd")
    with pytest.raises(ConfigError, match=r"no option\(s\) \['mu'\]"):
        build_strategy("fedavg", {"mu": 0.1})
    with pytest.raises(ConfigError, match="FedProx mu must be > 0"):
        build_strategy("fedprox", {"mu": 0})
