"""Secure aggregation driven by the one round loop over an in-memory grid."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedcare.data.base import SiteData
from fedcare.data.registry import load_dataset
from fedcare.errors import ConfigError, RoundFailedError
from fedcare.records.messages import Reply, Task
from fedcare.records.study import StudyConfig
from fedcare.secure.secagg.messages import HEADER_KEY
from fedcare.simulation.run import grid_for, train_on_grid
from fedcare.site.app import SiteApp
from fedcare.transport.inmemory import InMemoryGrid

STUDY = {
    "name": "heart-secure",
    "dataset": {"name": "heart-disease"},
    "model": {"kind": "logistic"},
    "rounds": 3,
    "training": {"epochs": 1, "lr": 0.1},
    "preprocessing": {"impute": "mean", "scale": "global"},
}
Handler = Callable[[Task], Reply]


@pytest.fixture(scope="module")
def sites() -> list[SiteData]:
    return list(load_dataset("heart-disease").sites)


def _study(mode: str) -> StudyConfig:
    return StudyConfig.from_dict({**STUDY, "privacy": {"mode": mode}})


def _params(grid: InMemoryGrid, study: StudyConfig, sites: list[SiteData]) -> np.ndarray:
    shape = sites[0].train.input_shape
    return train_on_grid(grid, study, shape, label="federated").params.flatten()


def _dropping(app: Handler, when: Callable[[Task], bool]) -> Handler:
    def handle(task: Task) -> Reply:
        return Reply.failure(task, "offline", "site went away") if when(task) else app(task)

    return handle


def test_secure_study_gives_the_plaintext_model(sites: list[SiteData]) -> None:
    plain = _params(grid_for(sites), _study("open"), sites)
    grid = grid_for(sites, record=True)
    secure = _params(grid, _study("secure"), sites)
    assert np.abs(secure - plain).max() < 1e-6  # quantization step 2^-23 / total weight
    fit_replies = [m for m in grid.wire if isinstance(m, Reply) and m.kind == "fit"]
    assert fit_replies and all(list(r.arrays) == ["masked"] for r in fit_replies)
    assert all(r.arrays["masked"].dtype == np.uint64 and r.num_samples == 0 for r in fit_replies)
    kinds = {(m.kind, m.config.get("secagg_stage")) for m in grid.wire if isinstance(m, Task)}
    assert {("secagg", "advertise"), ("secagg", "share"), ("fit", "mask")} <= kinds


@pytest.mark.parametrize("stage", ["share", "mask", "unmask"])
def test_one_site_dropping_mid_protocol_is_recovered(sites: list[SiteData], stage: str) -> None:
    victim = sites[1].site_id

    def gone(task: Task) -> bool:  # leaves in round 2 at ``stage``; back in round 3
        return (
            task.site_id == victim and task.round == 2 and task.config.get("secagg_stage") == stage
        )

    apps = {s.site_id: SiteApp(s, simulated=True) for s in sites}
    grid = InMemoryGrid({k: _dropping(a, gone) for k, a in apps.items()})
    study = _study("secure")
    model = train_on_grid(grid, study, sites[0].train.input_shape, label="federated")
    fit = model.history[1].fit
    assert fit["secagg_dropped"][stage] == [victim]
    counted = victim in fit["contributing_sites"]
    assert counted == (stage == "unmask")  # a masked input that arrived still counts
    assert fit["num_contributions"] == (4 if counted else 3)
    # the plaintext reference: the same site missing from the same round's sum
    plain_apps = {s.site_id: SiteApp(s, simulated=True) for s in sites}

    def plain_gone(t: Task) -> bool:
        return t.site_id == victim and t.round == 2 and t.kind == "fit"

    plain_grid = InMemoryGrid(
        {k: (a if counted else _dropping(a, plain_gone)) for k, a in plain_apps.items()}
    )
    reference = _params(plain_grid, _study("open"), sites)
    assert np.abs(model.params.flatten() - reference).max() < 1e-6


def test_two_sites_dropping_fail_the_round_cleanly(sites: list[SiteData]) -> None:
    lost = {sites[0].site_id, sites[2].site_id}

    def gone(t: Task) -> bool:
        return t.site_id in lost and t.config.get("secagg_stage") == "mask"

    grid = InMemoryGrid({s.site_id: _dropping(SiteApp(s, simulated=True), gone) for s in sites})
    with pytest.raises(
        RoundFailedError, match=r"stage 'mask': 2 of 4 sites remain.*threshold is 3"
    ):
        _params(grid, _study("secure"), sites)


def test_site_state_survives_worker_restarts(sites: list[SiteData], tmp_path: Path) -> None:
    seen_modes: list[int] = []

    def fresh_worker(site: SiteData) -> Handler:
        def handle(task: Task) -> Reply:  # a new process per task: only the disk remembers
            reply = SiteApp(site, state_dir=tmp_path / site.site_id, simulated=True)(task)
            seen_modes.extend(
                stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / site.site_id).glob("secagg-*")
            )
            return reply

        return handle

    grid = InMemoryGrid({s.site_id: fresh_worker(s) for s in sites})
    restarted = _params(grid, _study("secure").with_overrides(rounds=1), sites)
    same = _params(grid_for(sites), _study("secure").with_overrides(rounds=1), sites)
    assert np.array_equal(restarted, same)  # same seeds: same masks, same rounding
    assert seen_modes and set(seen_modes) == {0o600}
    assert not list(tmp_path.rglob("secagg-*"))  # deleted after the unmask stage


def test_secure_mode_refuses_robust_aggregation_and_scaffold() -> None:
    from fedcare.strategy.driver import study_strategy

    scaffold = {**STUDY, "privacy": {"mode": "secure"}, "strategy": {"name": "scaffold"}}
    with pytest.raises(ConfigError, match="does not support secure aggregation"):
        study_strategy(StudyConfig.from_dict(scaffold), 4)
    robust = {**STUDY, "privacy": {"mode": "secure"}, "aggregation": [{"name": "median"}]}
    with pytest.raises(ConfigError, match="cannot combine with robust aggregation"):
        study_strategy(StudyConfig.from_dict(robust), 4)


def test_a_study_sets_neighbours_and_threshold(sites: list[SiteData]) -> None:
    n = len(sites)
    settings = {"neighbours": n - 1, "threshold": n}  # every holder's share needed
    study = StudyConfig.from_dict({**STUDY, "privacy": {"mode": "secure", "secagg": settings}})
    plain = _params(grid_for(sites), _study("open"), sites)
    grid = grid_for(sites, record=True)
    assert np.abs(_params(grid, study, sites) - plain).max() < 1e-6
    headers = [
        json.loads(m.config[HEADER_KEY])
        for m in grid.wire
        if isinstance(m, Task) and m.config.get("secagg_stage") == "advertise"
    ]
    assert headers and {h["threshold"] for h in headers} == {n}
    assert all(len(h["neighbours"]) == n - 1 for h in headers)
    # with every share needed, one site dropping after sharing fails the round
    victim = sites[0].site_id
    apps = {s.site_id: SiteApp(s, simulated=True) for s in sites}
    dropping = InMemoryGrid(
        {
            k: _dropping(a, lambda t: t.site_id == victim and t.kind == "fit")
            for k, a in apps.items()
        }
    )
    with pytest.raises(RoundFailedError, match=f"threshold is {n}"):
        _params(dropping, study, sites)
