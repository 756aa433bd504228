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
