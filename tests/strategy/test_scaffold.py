import numpy as np

from fedcare.records import ArrayRecord, Reply, Task
from fedcare.strategy import RoundConfig, Scaffold, run_round
from fedcare.transport.inmemory import InMemoryGrid

from .helpers import PARAMS


def scaffold_site(delta: list[float], control: list[float], n: int, seen: list[Task]):
    def handle(task: Task) -> Reply:
        seen.append(task)
        arrays = ArrayRecord({"delta/w": delta, "control/w": control})
        return Reply(task.study_id, task.round, task.site_id, "fit", arrays=arrays, num_samples=n)

    return handle


def test_scaffold_moves_params_and_control_by_hand() -> None:
    seen: list[Task] = []
    grid = InMemoryGrid(
        {
            "a": scaffold_site([1.0, 0.0], [0.2, 0.0], 1, seen),
            "b": scaffold_site([0.0, 2.0], [0.0, 0.4], 3, seen),
        }
    )
    strategy = Scaffold(server_lr=1.0, train={"lr": 0.1, "optimizer": "adam"})
    cfg = RoundConfig(study_id="s", num_rounds=2, seed=0, evaluate_every=0)
    state, _ = run_round(grid, strategy, strategy.init_state(PARAMS), cfg, 1)
    np.testing.assert_allclose(state.params["w"], [0.25, 1.5])
    # all sites took part: c += 1 * weighted mean of control deltas = [0.05, 0.3]
    np.testing.assert_allclose(state.arrays["control"]["w"], [0.05, 0.3])
    assert {t.config["algorithm"] for t in seen} == {"scaffold"}
    assert {t.config["optimizer"] for t in seen} == {"sgd"}  # SCAFFOLD needs plain SGD
    np.testing.assert_array_equal(seen[0].arrays["control"]["w"], [0.0, 0.0])
    state2, _ = run_round(grid, strategy, state, cfg, 2)
    np.testing.assert_allclose(seen[-1].arrays["control"]["w"], [0.05, 0.3])
    np.testing.assert_allclose(state2.arrays["control"]["w"], [0.1, 0.6])


def test_scaffold_scales_control_by_participation() -> None:
    seen: list[Task] = []
    grid = InMemoryGrid({s: scaffold_site([1.0, 1.0], [1.0, 1.0], 1, seen) for s in "abcd"})
    strategy = Scaffold(fraction=0.5)
    cfg = RoundConfig(study_id="s", num_rounds=1, seed=0, evaluate_every=0)
    state, record = run_round(grid, strategy, strategy.init_state(PARAMS), cfg, 1)
    assert record.fit["num_contributions"] == 2
    np.testing.assert_allclose(state.arrays["control"]["w"], [0.5, 0.5])
