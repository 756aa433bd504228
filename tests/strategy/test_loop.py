import numpy as np
import pytest

from fedcare.errors import RoundFailedError
from fedcare.records import ArrayRecord, Reply, Task
from fedcare.strategy import FedAvg, RoundConfig, run_round, run_rounds, sample_sites
from fedcare.transport.inmemory import InMemoryGrid

from .helpers import PARAMS, fixed_site

CFG = RoundConfig(study_id="s", num_rounds=1, seed=7, evaluate_every=1)


def test_failed_sites_are_excluded_and_named() -> None:
    def broken(task: Task) -> Reply:
        raise RuntimeError("disk on fire")

    def refuses(task: Task) -> Reply:
        return Reply.failure(task, "refused", "plan not approved")

    grid = InMemoryGrid({"a": fixed_site({"w": [2.0, 2.0]}, 1), "b": broken, "c": refuses})
    strategy = FedAvg()
    state, record = run_round(grid, strategy, strategy.init_state(PARAMS), CFG, 1)
    np.testing.assert_allclose(state.params["w"], [2.0, 2.0])
    assert "disk on fire" in record.fit["failed_sites"]["b"]
    assert record.fit["failed_sites"]["c"] == "refused: plan not approved"
    assert record.evaluate is not None and set(record.evaluate["per_site"]) == {"a"}


def test_too_few_replies_fail_the_round_and_keep_the_state() -> None:
    def refuses(task: Task) -> Reply:
        return Reply.failure(task, "refused", "no")

    grid = InMemoryGrid({"a": fixed_site({"w": [1.0, 1.0]}, 1), "b": refuses, "c": refuses})
    strategy = FedAvg(min_sites=2)
    state = strategy.init_state(PARAMS)
    with pytest.raises(RoundFailedError, match="1 usable replies, min_sites is 2") as info:
        run_round(grid, strategy, state, CFG, 1)
    assert info.value.replied == 1 and info.value.required == 2
    np.testing.assert_array_equal(state.params["w"], [0.0, 0.0])
    with pytest.raises(RoundFailedError, match="2 sites available"):
        run_round(grid.subset(["a", "b"]), FedAvg(min_sites=3), state, CFG, 1)


def test_replies_for_another_round_or_study_are_refused() -> None:
    def stale(task: Task) -> Reply:
        return Reply(
            task.study_id,
            task.round - 1,
            task.site_id,
            "fit",
            arrays=ArrayRecord({"w": [100.0, 100.0]}),
            num_samples=5,
        )

    def other_study(task: Task) -> Reply:
        return Reply(
            "other",
            task.round,
            task.site_id,
            "fit",
            arrays=ArrayRecord({"w": [100.0, 100.0]}),
            num_samples=5,
        )

    grid = InMemoryGrid({"a": fixed_site({"w": [1.0, 3.0]}, 1), "b": stale, "c": other_study})
    strategy = FedAvg()
    state, record = run_round(grid, strategy, strategy.init_state(PARAMS), CFG, 1)
    np.testing.assert_allclose(state.params["w"], [1.0, 3.0])
    reasons = " ".join(record.fit["failed_sites"].values())
    assert "answers no open task" in reasons


def test_nan_update_is_rejected_naming_the_site() -> None:
    grid = InMemoryGrid(
        {"a": fixed_site({"w": [1.0, 1.0]}, 1), "evil": fixed_site({"w": [np.nan, 0.0]}, 100)}
    )
    strategy = FedAvg()
    state, record = run_round(grid, strategy, strategy.init_state(PARAMS), CFG, 1)
    np.testing.assert_allclose(state.params["w"], [1.0, 1.0])
    assert record.fit["rejected_sites"] == ["evil"]


def test_sampling_is_seeded_and_respects_min_sites() -> None:
    sites = [f"s{i}" for i in range(10)]
    a = sample_sites(sites, fraction=0.3, min_sites=2, rng=np.random.default_rng(1), round=1)
    b = sample_sites(sites, fraction=0.3, min_sites=2, rng=np.random.default_rng(1), round=1)
    assert a == b and len(a) == 3
    assert (
        len(sample_sites(sites, fraction=0.1, min_sites=4, rng=np.random.default_rng(1), round=1))
        == 4
    )


def test_resuming_from_a_round_gives_the_same_result() -> None:
    grid = InMemoryGrid(
        {s: fixed_site({"w": [float(i), 1.0]}, i + 1) for i, s in enumerate("abcdef")}
    )
    strategy = FedAvg(fraction=0.5)
    cfg = RoundConfig(study_id="s", num_rounds=6, seed=3, evaluate_every=0)
    full, _ = run_rounds(grid, strategy, strategy.init_state(PARAMS), cfg)
    half_cfg = RoundConfig(study_id="s", num_rounds=3, seed=3, evaluate_every=0)
    mid, _ = run_rounds(grid, strategy, strategy.init_state(PARAMS), half_cfg)
    resumed, _ = run_rounds(grid, strategy, mid, cfg, start_round=4)
    np.testing.assert_array_equal(full.params["w"], resumed.params["w"])
