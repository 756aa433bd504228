"""The statistics round leaves out a site that refuses or sends implausible sums, naming it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from fedcare.analytics.federated import federated_feature_moments
from fedcare.analytics.moments import combine_moments, feature_moments
from fedcare.data.base import FederatedDataset
from fedcare.errors import RoundFailedError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import grid_for
from fedcare.site.app import Handler
from fedcare.strategy.driver import start_study, study_strategy
from fedcare.strategy.loop import RoundConfig

CFG = RoundConfig(study_id="t", num_rounds=1, seed=0)
Edit = Callable[[Reply], Reply]


def _stats_mod(edit: Edit) -> Callable[[Task, Handler], Reply]:
    def mod(task: Task, next_handler: Handler) -> Reply:
        reply = next_handler(task)
        return edit(reply) if task.kind == "stats" else reply

    return mod


ATTACKS: dict[str, tuple[Edit, str]] = {
    "wrong shape": (
        lambda r: replace(r, arrays=r.arrays.map(lambda v: np.concatenate([v, v]))),
        "shapes",
    ),
    "poisoned sums": (
        lambda r: replace(
            r,
            arrays=ArrayRecord(
                {**r.arrays, "sum": r.arrays["sum"] * 1e6, "sumsq": r.arrays["sumsq"] * 1e12}
            ),
        ),
        "pooled SDs",
    ),
    "rows other than the declared ones": (lambda r: replace(r, num_samples=84), "declared 85"),
    "counts above the declared rows": (
        lambda r: replace(r, arrays=r.arrays.map(lambda v: v * 10)),
        "rows it declared",
    ),
}


def _honest_moments(heart: FederatedDataset, without: str) -> np.ndarray:
    parts = [
        feature_moments(np.asarray(s.train.X, np.float64))
        for s in heart.sites
        if s.site_id != without
    ]
    return combine_moments(parts).mean


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_bad_site_is_left_out_and_named(heart: FederatedDataset, attack: str) -> None:
    edit, why = ATTACKS[attack]
    grid = grid_for(list(heart.sites), mods={"va": [_stats_mod(edit)]})
    result = federated_feature_moments(grid, CFG, min_sites=3, width=13)
    assert result.sites == ("cleveland", "hungary", "switzerland")
    assert list(result.rejected) == ["va"] and why in result.rejected["va"]
    np.testing.assert_allclose(result.moments.mean, _honest_moments(heart, "va"))


def test_a_refusal_is_named_and_the_round_goes_on(heart: FederatedDataset) -> None:
    def refuse(task: Task, next_handler: Handler) -> Reply:
        if task.kind == "stats":
            return Reply.failure(task, "refused", "no statistics today")
        return next_handler(task)

    grid = grid_for(list(heart.sites), mods={"va": [refuse]})
    result = federated_feature_moments(grid, CFG, min_sites=3, width=13)
    assert result.rejected == {"va": "refused: no statistics today"}
    with pytest.raises(RoundFailedError, match="3 of 4 sites gave usable sums, 4 needed"):
        federated_feature_moments(grid, CFG, min_sites=4, width=13)


def test_round_zero_names_the_sites_of_the_statistics(heart: FederatedDataset) -> None:
    study = StudyConfig.from_dict(
        {
            "name": "t",
            "dataset": {"name": "heart-disease", "options": {"protocol": "raw"}},
            "model": {"kind": "logistic"},
            "preprocessing": {"impute": "mean", "scale": "global"},
            "min_sites": 3,
        },
        source="test",
    )
    edit, _ = ATTACKS["poisoned sums"]
    grid = grid_for(list(heart.sites), mods={"hungary": [_stats_mod(edit)]})
    start = start_study(grid, study, study_strategy(study, 4), "t", (13,))
    assert start.statistics_sites == ("cleveland", "switzerland", "va")
    assert list(start.statistics_rejected) == ["hungary"]
    np.testing.assert_allclose(
        start.task_arrays["preprocess"]["mean"], _honest_moments(heart, "hungary")
    )


def test_simulation_results_name_the_statistics_sites(heart: FederatedDataset) -> None:
    from fedcare.simulation.run import run_simulation

    study = StudyConfig.from_dict(
        {
            "name": "t",
            "dataset": {"name": "heart-disease", "options": {"protocol": "raw"}},
            "model": {"kind": "logistic"},
            "preprocessing": {"impute": "mean", "scale": "global"},
            "rounds": 1,
            "min_sites": 3,
            "baselines": {"local": False, "pooled": False, "cross_site": False},
        },
        source="test",
    )
    edit, _ = ATTACKS["wrong shape"]
    results = run_simulation(study, dataset=heart, mods={"va": [_stats_mod(edit)]})
    assert results["start"]["statistics_sites"] == ["cleveland", "hungary", "switzerland"]
    assert "shapes" in results["start"]["statistics_rejected"]["va"]
