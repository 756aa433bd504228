from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedcare.data.registry import load_dataset
from fedcare.errors import ConfigError
from fedcare.records import ArrayRecord, Reply, Task
from fedcare.records.study import StudyConfig
from fedcare.simulation.attacks import (
    attack_mod,
    gaussian_noise,
    malicious_mods,
    scale_update,
    sign_flip,
)
from fedcare.simulation.run import grid_for, run_simulation, train_on_grid

from ..conftest import REPO, require_mirror

DELTA = ArrayRecord({"w": np.array([1.0, -2.0]), "b": np.array(0.5)})


def task(kind: str = "fit", round: int = 1, site: str = "a") -> Task:
    return Task(study_id="s", round=round, site_id=site, kind=kind)  # type: ignore[arg-type]


def honest(t: Task) -> Reply:
    return Reply(t.study_id, t.round, t.site_id, t.kind, arrays=DELTA, num_samples=3)


def test_scale_and_sign_flip_multiply_the_update() -> None:
    scaled = scale_update(100.0)(task(), honest)
    np.testing.assert_allclose(scaled.arrays["w"], [100.0, -200.0])
    assert scaled.num_samples == 3
    flipped = sign_flip(2.0)(task(), honest)
    np.testing.assert_allclose(flipped.arrays["w"], [-2.0, 4.0])
    np.testing.assert_allclose(flipped.arrays["b"], -1.0)
    assert DELTA["w"][0] == 1.0  # the honest reply is not mutated


def test_only_successful_fit_replies_are_touched() -> None:
    mod = scale_update(100.0)
    assert mod(task("evaluate"), honest).arrays == DELTA
    failing = mod(task(), lambda t: Reply.failure(t, "refused", "policy"))
    assert failing.error is not None and failing.error.kind == "refused"


def test_noise_is_seeded_per_round_and_site() -> None:
    a = gaussian_noise(0.5, seed=1)(task(round=2), honest)
    b = gaussian_noise(0.5, seed=1)(task(round=2), honest)
    c = gaussian_noise(0.5, seed=1)(task(round=3), honest)
    assert a.arrays == b.arrays and a.arrays != c.arrays
    spread = np.concatenate([(a.arrays[k] - DELTA[k]).ravel() for k in DELTA])
    assert np.all(np.abs(spread) < 5 * 0.5) and np.any(spread != 0)


@pytest.mark.parametrize(
    ("kind", "strength", "message"),
    [("poison", 1.0, "unknown attack 'poison'"), ("sign_flip", -1.0, "> 0"), ("noise", 0.0, "> 0")],
)
def test_bad_attacks(kind: str, strength: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        attack_mod(kind, strength=strength)


@pytest.fixture(scope="module")
def heart() -> tuple[StudyConfig, Any]:
    require_mirror()
    study = StudyConfig.from_yaml(REPO / "examples" / "heart-disease.yaml").with_overrides(
        baselines={"local": False, "pooled": False, "cross_site": False}
    )
    return study, load_dataset("heart-disease", **study.dataset.options)


def accuracy(study: StudyConfig, ds: Any, layers: list, attack: str | None) -> dict[str, Any]:
    mods = None if attack is None else malicious_mods(["cleveland"], attack, strength=100.0)
    if attack == "sign_flip":
        mods = malicious_mods(["cleveland"], attack, strength=1.0)
    return run_simulation(study.with_overrides(aggregation=layers), dataset=ds, mods=mods)


@pytest.mark.slow
def test_one_malicious_hospital_breaks_fedavg_but_not_robust_means(heart) -> None:
    study, ds = heart
    clean = accuracy(study, ds, [], None)["final"]["unweighted"]
    fedavg = accuracy(study, ds, [], "sign_flip")["final"]["unweighted"]
    scaled = accuracy(study, ds, [], "scale")
    assert fedavg["accuracy"] < clean["accuracy"] - 0.15  # sign flip: collapse
    # x100: the default validation holds back the largest update and rejects it in the rounds
    # where it is over 100 times every other (DEFAULT_OUTLIER_RATIO), naming the site
    rejected = [r["fit"]["rejected_sites"] for r in scaled["history"]]
    assert any(sites == ["cleveland"] for sites in rejected), rejected
    assert all(sites in ([], ["cleveland"]) for sites in rejected), rejected
    for layers in ([{"name": "median"}], [{"name": "trimmed_mean", "trim": 0.25}]):
        for attack in ("scale", "sign_flip"):
            run = accuracy(study, ds, layers, attack)
            got = run["final"]["unweighted"]
            assert got["accuracy"] > clean["accuracy"] - 0.04, (layers, attack)
            scores = run["history"][-1]["fit"]["anomaly_scores"]
            if attack == "scale":  # screened out by validation, or the most anomalous
                screened = "cleveland" in run["history"][-1]["fit"]["rejected_sites"]
                assert screened or max(scores, key=scores.get) == "cleveland"


@pytest.mark.slow
def test_the_site_half_of_norm_bounding_travels_with_every_fit_task(heart) -> None:
    study, ds = heart
    seen: list[dict] = []

    def spy(t: Task, next_handler: Any) -> Reply:
        reply = next_handler(t)
        if t.kind == "fit":
            seen.append({"pipeline": dict(t.pipeline), "norm": reply.arrays.norm()})
        return reply

    layers = [{"name": "norm_bound", "max_norm": 0.01}]
    run_simulation(
        study.with_overrides(aggregation=layers, rounds=2), dataset=ds, mods={"va": [spy]}
    )
    assert len(seen) == 2
    for entry in seen:
        assert entry["pipeline"] == {"norm_bound": {"version": 1, "max_norm": 0.01}}
        assert entry["norm"] <= 0.01 * (1 + 1e-6)  # clipped at the site, before sending


@pytest.mark.slow
def test_norm_bounding_under_secure_aggregation_gives_the_plaintext_bounded_model(heart) -> None:
    study, ds = heart
    sites = list(ds.sites)
    bounded = study.with_overrides(rounds=3, aggregation=[{"name": "norm_bound", "max_norm": 0.02}])

    def params(s: StudyConfig) -> np.ndarray:
        shape = sites[0].train.input_shape
        model = train_on_grid(grid_for(sites), s, shape, label="federated")
        return np.concatenate([v.ravel() for v in model.params.values()])

    plain = params(bounded)
    secure = params(bounded.with_overrides(privacy={"mode": "secure"}))
    unbounded = params(study.with_overrides(rounds=3))
    assert np.abs(secure - plain).max() < 1e-6  # same clipped updates, only masked
    assert np.abs(unbounded - plain).max() > 1e-3  # and the bound did clip
    with pytest.raises(ConfigError, match=r"robust aggregation layer\(s\) \['median'\]"):
        params(bounded.with_overrides(privacy={"mode": "secure"}, aggregation=[{"name": "median"}]))
