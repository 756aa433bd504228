"""Stragglers in simulation: the Slowdown mod, and deadline-bound rounds over worker processes
(a round closes after ``min_sites`` and the grace period; the straggler's late reply is
dropped, never taken into the next round)."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import time
from pathlib import Path

import pytest

from fedcare.data.registry import load_dataset
from fedcare.errors import ConfigError
from fedcare.records import Reply, Task
from fedcare.records.study import StudyConfig
from fedcare.simulation.parallel import ParallelGrid
from fedcare.simulation.stragglers import Slowdown, pick_stragglers, straggler_mods
from fedcare.simulation.training import train_on_grid

from ..conftest import require_mirror

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_slowdown_sleeps_factor_times_the_fit_only() -> None:
    def work(task: Task) -> Reply:
        time.sleep(0.05)
        return Reply(task.study_id, task.round, task.site_id, task.kind)

    slow = pickle.loads(pickle.dumps(Slowdown(4.0)))  # sent to worker processes
    start = time.perf_counter()
    slow(Task("s", 1, "a", "fit"), work)
    assert time.perf_counter() - start == pytest.approx(0.2, abs=0.05)
    start = time.perf_counter()
    slow(Task("s", 1, "a", "evaluate"), work)
    assert time.perf_counter() - start == pytest.approx(0.05, abs=0.03)
    with pytest.raises(ConfigError, match=r"factor must be a number >= 1, got 0\.5"):
        Slowdown(0.5)


def test_stragglers_are_a_seeded_tenth_of_the_sites() -> None:
    sites = [f"site-{i:02d}" for i in range(20)]
    picked = pick_stragglers(sites, 0.1, seed=3)
    assert len(picked) == 2 and picked == pick_stragglers(list(reversed(sites)), 0.1, seed=3)
    assert set(picked) <= set(sites) and picked != pick_stragglers(sites, 0.1, seed=4)
    mods = straggler_mods(sites, seed=3)
    assert sorted(mods) == picked and mods[picked[0]] == [Slowdown(10.0)]
    with pytest.raises(ConfigError, match=r"fraction must be in \[0, 1\], got 1.5"):
        pick_stragglers(sites, 1.5, seed=0)


def test_a_deadline_bound_round_in_workers_leaves_the_straggler_out() -> None:
    require_mirror()
    study = StudyConfig.from_yaml(EXAMPLES / "heart-disease.yaml").with_overrides(
        rounds=2,
        min_sites=3,
        round_timeout=20.0,
        round_grace_s=0.3,
        baselines={"local": False, "pooled": False},
    )
    sites = list(load_dataset("heart-disease", protocol="raw").sites)
    mods = {"cleveland": [Slowdown(1.0, extra_s=2.0)]}
    with ParallelGrid(sites, workers=4, mods=mods) as grid:
        model = train_on_grid(grid, study, (13,), label="federated")
    assert mp.active_children() == []

    for record in model.history:
        fit = record.fit
        assert fit["num_contributions"] == 3
        timing = fit["site_timing"]
        assert timing["cleveland"] == {"reply_s": None, "outcome": "late"}
        assert all(timing[s]["outcome"] == "taken" for s in ("hungary", "switzerland", "va"))
        assert max(timing[s]["reply_s"] for s in ("hungary", "switzerland", "va")) < 1.0
        assert record.duration_s < 1.5
        assert "round closed" in fit["failed_sites"]["cleveland"]
        assert sorted(fit["site_info"]) == ["hungary", "switzerland", "va"]
