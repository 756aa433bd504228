"""Deadline-bound rounds over the in-memory grid: a round closes after ``min_sites`` replied
and its grace period passed; the sites not run are recorded late, the sum is in site order."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from fedcare.errors import ConfigError
from fedcare.grid import Quorum
from fedcare.records import Reply, Task
from fedcare.records.study import StudyConfig
from fedcare.strategy import FedAvg, RoundConfig, run_round
from fedcare.strategy.driver import round_config
from fedcare.transport.inmemory import InMemoryGrid

from .helpers import PARAMS, fixed_site


def slow(seconds: float, update: list[float], n: int) -> Callable[[Task], Reply]:
    inner = fixed_site({"w": np.array(update)}, n)

    def handle(task: Task) -> Reply:
        if task.kind == "fit":
            time.sleep(seconds)
        return inner(task)

    return handle


def _grid() -> InMemoryGrid:
    return InMemoryGrid(
        {
            "a": slow(0.05, [1.0, 1.0], 1),
            "b": slow(0.05, [3.0, 3.0], 1),
            "c": slow(0.3, [5.0, 5.0], 2),
            "d": slow(0.6, [100.0, 100.0], 1),
        },
        record=True,
    )


def test_a_round_closes_after_min_sites_and_the_grace_period() -> None:
    grid = _grid()
    cfg = RoundConfig("s", num_rounds=1, seed=0, round_timeout=30.0, round_grace_s=0.2)
    strategy = FedAvg(min_sites=2)
    start = time.perf_counter()
    state, record = run_round(grid, strategy, strategy.init_state(PARAMS), cfg, 1)
    took = time.perf_counter() - start
    # a, b (quorum at ~0.1 s); c starts within the grace and runs to its end (~0.4 s); d is
    # never run: the grace passed before its turn
    assert 0.35 <= took < 0.6
    fits = [m.site_id for m in grid.wire if isinstance(m, Task) and m.kind == "fit"]
    assert fits == ["a", "b", "c"]
    np.testing.assert_allclose(state.params["w"], [(1 + 3 + 10) / 4] * 2)
    timing = record.fit["site_timing"]
    assert [timing[s]["outcome"] for s in "abcd"] == ["taken", "taken", "taken", "late"]
    assert timing["d"]["reply_s"] is None
    assert 0.04 <= timing["a"]["reply_s"] < timing["b"]["reply_s"] < timing["c"]["reply_s"]
    assert timing["c"]["reply_s"] == pytest.approx(0.4, abs=0.1)
    assert (
        "round closed (a grace period of 0.2 s after 2 sites replied, or its deadline)"
        in (record.fit["failed_sites"]["d"])
    )
    # the evaluation of the new model is bound the same way (d is fast to evaluate: it runs)
    assert record.evaluate is not None


def test_a_zero_grace_closes_at_the_quorum_and_errors_do_not_count() -> None:
    def refuses(task: Task) -> Reply:
        return Reply.failure(task, "refused", "no")

    grid = InMemoryGrid(
        {"a": refuses, "b": slow(0.0, [2.0, 2.0], 1), "c": slow(0.0, [4.0, 4.0], 1)},
        record=True,
    )
    tasks = [Task("s", 1, s, "fit") for s in ("a", "b", "c")]
    replies = list(grid.send_and_receive(tasks, quorum=Quorum(1, 0.0)))
    assert [(r.site_id, r.error is None) for r in replies] == [("a", False), ("b", True)]


def test_without_a_grace_every_site_is_waited_for() -> None:
    grid = _grid()
    cfg = RoundConfig("s", num_rounds=1, seed=0, evaluate_every=0)
    strategy = FedAvg(min_sites=2)
    _, record = run_round(grid, strategy, strategy.init_state(PARAMS), cfg, 1)
    timing = record.fit["site_timing"]
    assert {t["outcome"] for t in timing.values()} == {"taken"}
    assert timing["d"]["reply_s"] == pytest.approx(1.0, abs=0.15)


def _study(**changes: object) -> StudyConfig:
    base = {"name": "s", "dataset": {"name": "synthetic"}, "model": {"kind": "logistic"}}
    return StudyConfig.from_dict({**base, **changes})


def test_the_study_option_is_validated_and_reaches_the_loop() -> None:
    study = _study(round_grace_s=2.5, round_timeout=60, min_sites=3)
    assert round_config(study, "s").round_grace_s == 2.5
    assert round_config(_study(), "s").round_grace_s is None
    with pytest.raises(ConfigError, match="round_grace_s"):
        _study(round_grace_s=-1)
    with pytest.raises(ConfigError, match="not shorter than round_timeout 10"):
        _study(round_grace_s=10, round_timeout=10)
    with pytest.raises(ConfigError, match="deadline-bound rounds run in mode 'open' only"):
        _study(round_grace_s=1, privacy={"mode": "secure"})
