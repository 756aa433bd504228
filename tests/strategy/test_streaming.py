"""Aggregation streams: memory grows with the model, not with sites x model."""

from __future__ import annotations

import tracemalloc

import numpy as np

from fedcare.records import ArrayRecord, Reply, Task
from fedcare.strategy import FedAvg, RoundConfig, run_round
from fedcare.transport.inmemory import InMemoryGrid

SIZE = 250_000  # float64: 2 MB per update
SITES = 30


def site(i: int):
    def handle(task: Task) -> Reply:
        update = np.full(SIZE, float(i))  # made when the site is asked, dropped once aggregated
        return Reply(
            task.study_id,
            task.round,
            task.site_id,
            "fit",
            arrays=ArrayRecord({"w": update}, copy=False),
            num_samples=1,
        )

    return handle


def test_round_memory_is_a_few_models_not_sites_times_model() -> None:
    grid = InMemoryGrid({f"s{i:02d}": site(i) for i in range(SITES)})
    strategy = FedAvg()
    state = strategy.init_state(ArrayRecord({"w": np.zeros(SIZE)}))
    cfg = RoundConfig(study_id="m", num_rounds=1, seed=0, evaluate_every=0)
    model_bytes = SIZE * 8
    tracemalloc.start()
    try:
        new_state, _ = run_round(grid, strategy, state, cfg, 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(new_state.params["w"][:3], np.mean(np.arange(SITES)))
    # holding every update would need SITES models (60 MB); streaming needs a handful
    assert peak < 8 * model_bytes, f"peak {peak / 1e6:.1f} MB for {SITES} sites"


def test_no_update_is_referenced_once_aggregated_so_mapped_pages_can_go() -> None:
    """A reply's arrays (memory-mapped from a file in deployment) are dropped by every layer of
    the loop once added: while the next site is asked, only the update the outlier screening
    holds back may still be alive, and none is after the round."""
    import weakref

    refs: list[weakref.ref[np.ndarray]] = []
    alive_when_asked: list[int] = []

    def growing(i: int):
        def handle(task: Task) -> Reply:
            alive_when_asked.append(sum(r() is not None for r in refs))
            update = np.full(4, float(i + 1))  # growing norms: the newest is held back
            refs.append(weakref.ref(update))
            arrays = ArrayRecord({"w": update}, copy=False)
            return Reply(task.study_id, task.round, task.site_id, "fit", arrays, num_samples=1)

        return handle

    grid = InMemoryGrid({f"s{i}": growing(i) for i in range(6)})
    strategy = FedAvg()
    state = strategy.init_state(ArrayRecord({"w": np.zeros(4)}))
    cfg = RoundConfig(study_id="m", num_rounds=1, seed=0, evaluate_every=0)
    new_state, record = run_round(grid, strategy, state, cfg, 1)
    assert max(alive_when_asked) == 1
    assert all(r() is None for r in refs)
    np.testing.assert_array_equal(new_state.params["w"], np.full(4, 3.5))
    assert record.fit["num_contributions"] == 6


def test_the_initial_model_is_freed_once_round_one_replaces_it() -> None:
    """continue_study takes the start's state: a start kept for its task arrays (as the
    coordinator's runner keeps it) does not keep the initial model alive all study."""
    import weakref

    from fedcare.strategy.driver import StudyStart, continue_study

    initial = np.zeros(SIZE)
    alive: list[bool] = []
    ref = weakref.ref(initial)

    def handle(task: Task) -> Reply:
        if task.round == 2:  # round 1 replaced the initial model
            alive.append(ref() is not None)
        arrays = ArrayRecord({"w": np.ones(SIZE)}, copy=False)
        return Reply(task.study_id, task.round, task.site_id, "fit", arrays, num_samples=1)

    from fedcare.records.study import StudyConfig

    study = StudyConfig.from_dict(
        {"name": "m", "dataset": {"name": "synthetic"}, "model": {"kind": "logistic"},
         "rounds": 2, "min_sites": 1, "evaluate_every": 0,
         "baselines": {"local": False, "pooled": False, "cross_site": False}},
        source="test",
    )  # fmt: skip
    strategy = FedAvg()
    start = StudyStart(state=strategy.init_state(ArrayRecord({"w": initial}, copy=False)))
    del initial
    continue_study(InMemoryGrid({"s0": handle}), study, strategy, "m", start)
    assert alive == [False]
    assert start.state is None  # handed to the loop
