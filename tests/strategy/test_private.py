"""Privacy mode ``private`` in simulation: clip + site noise under a secure sum, accounted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedcare.data.base import SiteData
from fedcare.data.registry import load_dataset
from fedcare.errors import ConfigError
from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.records.messages import Reply, Task
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import grid_for, train_on_grid
from fedcare.site.app import SiteApp
from fedcare.strategy.driver import AVAILABLE_PRIVACY_MODES, check_privacy_mode, study_strategy
from fedcare.transport.inmemory import InMemoryGrid

ROUNDS, CLIP = 4, 1.0
BASE: dict[str, Any] = {
    "name": "heart-private",
    "dataset": {"name": "heart-disease"},
    "model": {"kind": "logistic"},
    "rounds": ROUNDS,
    "training": {"epochs": 1, "lr": 0.1},
    "preprocessing": {"impute": "mean", "scale": "global"},
    "min_sites": 4,
}


@pytest.fixture(scope="module")
def sites() -> list[SiteData]:
    return list(load_dataset("heart-disease").sites)


def _study(mode: str, **dp: Any) -> StudyConfig:
    privacy: dict[str, Any] = {"mode": mode}
    if dp:
        privacy["dp"] = {"clip_norm": CLIP, **dp}
    return StudyConfig.from_dict({**BASE, "privacy": privacy})


def _train(sites: list[SiteData], study: StudyConfig, record: bool = False) -> Any:
    grid = grid_for(sites, record=record)
    model = train_on_grid(grid, study, sites[0].train.input_shape, label="federated")
    return model, grid


def test_private_is_available_and_needs_its_dp_settings() -> None:
    assert "private" in AVAILABLE_PRIVACY_MODES
    with pytest.raises(ConfigError, match=r"missing field privacy\.dp \("):
        study_strategy(_study("private"), 4)
    with pytest.raises(ConfigError, match=r"'heart-private' \(privacy mode 'private'\): missing"):
        check_privacy_mode(_study("private"))  # at submit
    no_noise = StudyConfig.from_dict(
        {**BASE, "privacy": {"mode": "private", "dp": {"local_dp_sgd": {"noise_multiplier": 1}}}}
    )
    with pytest.raises(ConfigError, match=r"missing field privacy\.dp\.noise_multiplier"):
        study_strategy(no_noise, 4)
    robust = StudyConfig.from_dict(
        {
            **_study("private", noise_multiplier=1.0).model_dump(),
            "aggregation": [{"name": "median"}],
        }
    )
    with pytest.raises(ConfigError, match="field aggregation must be empty"):
        study_strategy(robust, 4)


def test_private_trains_within_the_expected_dp_loss_of_open(sites: list[SiteData]) -> None:
    """Two differences from ``open``: sites are averaged with equal weight (user-level DP
    needs each site's contribution bounded), and the noise. The noise part: each round's mean
    update carries N(0, (zC)^2 k / m) / k^2 per coordinate (k = m = 4 sites), so after R rounds
    of FedAvg (server step 1) it moves the parameters by about sd ``zC sqrt(R) / k`` per
    coordinate; we allow 5 sd of the L2 norm over the ``d`` coordinates against a noise-free
    private run (z = 0). Against ``open``: test loss within 0.05, AUROC within 0.1 (measured
    0.018 and 0.063 at z = 0.05; 4 rounds of logistic regression on heart-disease)."""
    z = 0.05
    plain, _ = _train(sites, _study("open"))
    exact, _ = _train(sites, _study("private", noise_multiplier=0.0))
    private, grid = _train(sites, _study("private", noise_multiplier=z), record=True)
    a, b = exact.params.flatten(), private.params.flatten()
    expected_sd = z * CLIP * np.sqrt(ROUNDS) / len(sites)
    distance = float(np.linalg.norm(a - b))
    assert 0.1 * expected_sd < distance < 5 * expected_sd * np.sqrt(a.size)
    ours, theirs = (m.history[-1].evaluate["weighted"] for m in (private, plain))
    assert abs(ours["loss"] - theirs["loss"]) < 0.05
    assert abs(ours["auroc"] - theirs["auroc"]) < 0.1
    fit = private.history[-1].fit
    assert fit["dp_event"] == DpEvent(z).to_dict() and fit["dp_events"] == [fit["dp_event"]]
    assert fit["num_contributions"] == len(sites) and fit["noise_std"] == pytest.approx(z * CLIP)
    masked = [m for m in grid.wire if isinstance(m, Reply) and m.kind == "fit"]
    assert masked and all(list(r.arrays) == ["masked"] for r in masked)  # only the sum is seen
    spec = next(m.pipeline for m in grid.wire if isinstance(m, Task) and m.kind == "fit")
    assert spec["distributed_dp"]["site_std"] == pytest.approx(z * CLIP / 2)  # / sqrt(4)
    assert spec["norm_bound"]["max_norm"] == CLIP and "secagg" in spec


def test_large_noise_costs_accuracy_and_the_sum_is_reproducible(sites: list[SiteData]) -> None:
    noisy = _study("private", noise_multiplier=5.0)
    first, _ = _train(sites, noisy)
    again, _ = _train(sites, noisy)
    assert np.array_equal(first.params.flatten(), again.params.flatten())  # simulated seeds
    plain, _ = _train(sites, _study("open"))
    gap = np.linalg.norm(first.params.flatten() - plain.params.flatten())
    assert gap > 5 * 0.05 * np.sqrt(ROUNDS) / len(sites)  # far more than the small-z case


def test_a_dropout_keeps_the_accounted_noise(sites: list[SiteData]) -> None:
    """Per-site noise is scaled to min_sites (3 of 4): with one site gone the sum still
    carries the full variance, so the round is accounted with the study's z."""
    victim = sites[3].site_id
    study = StudyConfig.from_dict(
        {**_study("private", noise_multiplier=1.0).model_dump(), "min_sites": 3}
    )
    apps = {s.site_id: SiteApp(s, simulated=True) for s in sites}

    def handler(site: str) -> Any:
        def handle(task: Task) -> Reply:
            if site == victim and task.round == 2 and task.kind == "fit":
                return Reply.failure(task, "offline", "site went away")
            return apps[site](task)

        return handle

    grid = InMemoryGrid({s: handler(s) for s in apps}, record=True)
    model = train_on_grid(grid, study, sites[0].train.input_shape, label="federated")
    fit = model.history[1].fit
    assert fit["num_contributions"] == 3 and victim not in fit["contributing_sites"]
    assert fit["dp_event"] == DpEvent(1.0).to_dict()
    spec = next(m.pipeline for m in grid.wire if isinstance(m, Task) and m.kind == "fit")
    std = spec["distributed_dp"]["site_std"]
    assert 3 * std**2 == pytest.approx((1.0 * CLIP) ** 2)  # the smallest accepted sum: z C
