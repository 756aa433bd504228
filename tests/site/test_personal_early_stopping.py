"""Fine-tuning with early stopping on a held-out share of the site's training rows
(``personalization: {method: finetune, validation_share: ...}``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from fedcare.data.base import Dataset, SiteData
from fedcare.errors import ConfigError
from fedcare.models.base import LocalTrainSpec
from fedcare.models.logistic import LogisticRegression
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Task
from fedcare.records.study import StudyConfig
from fedcare.site.personal import finetune, holdout_rows
from fedcare.site.runtime import SiteRuntime
from fedcare.strategy.driver import round_config


def rows(n: int, seed: int, shift: float = 1.5) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] - shift * X[:, 1] + 0.8 * rng.normal(size=n) > 0).astype(np.float64)
    return Dataset(X=X, y=y)


ZERO = ArrayRecord({"weight": np.zeros(3), "bias": np.zeros(())})
SPEC = LocalTrainSpec(epochs=30, lr=0.3, batch_size=8)


def study(**personalization: Any) -> StudyConfig:
    return StudyConfig.from_dict(
        {
            "name": "p",
            "dataset": {"name": "synthetic"},
            "model": {"kind": "logistic"},
            "training": {"lr": 0.1, "epochs": 2, "batch_size": 10},
            "rounds": 3,
            "personalization": personalization,
        }
    )


def test_holdout_rows_are_stratified_sorted_and_sized() -> None:
    y = np.array([1.0] * 30 + [0.0] * 70)
    held = holdout_rows(y, 0.2, np.random.default_rng(0))
    assert len(held) == 20 and int(y[held].sum()) == 6
    assert np.array_equal(held, np.unique(held))
    cont = holdout_rows(np.linspace(0, 1, 50), 0.3, np.random.default_rng(0))
    assert len(cont) == 15  # continuous y: drawn unstratified


def test_early_stopping_keeps_the_best_checkpoint_by_held_out_loss() -> None:
    data, adapter = rows(120, 0), LogisticRegression()
    got = finetune(adapter, ZERO, data, SPEC, np.random.default_rng(3), validation_share=0.25)
    # the same checkpoints by hand: the held-out rows, then one pass at a time
    rng = np.random.default_rng(3)
    held = holdout_rows(np.asarray(data.y), 0.25, rng)
    fit = data.take(np.setdiff1d(np.arange(len(data)), held))
    val = data.take(held)
    checkpoints, current = [ZERO], ZERO
    for _ in range(SPEC.epochs):
        current = adapter.fit(current, fit, replace(SPEC, epochs=1), rng).params
        checkpoints.append(current)
    losses = [adapter.loss(c, val) for c in checkpoints]
    best = int(np.argmin(losses))
    assert 0 < best < SPEC.epochs  # neither the start nor the last pass: it did stop early
    np.testing.assert_array_equal(got.flatten(), checkpoints[best].flatten())
    assert adapter.loss(got, val) < adapter.loss(checkpoints[-1], val) - 1e-4


def test_a_start_the_rows_cannot_improve_is_kept_unchanged() -> None:
    data, adapter = rows(80, 1), LogisticRegression()
    held = holdout_rows(np.asarray(data.y), 0.25, np.random.default_rng(5))
    # the held-out rows' own loss minimum: every pass on the other rows moves away from it
    best = adapter.fit(
        ZERO, data.take(held), LocalTrainSpec(epochs=3000, lr=0.5), np.random.default_rng(0)
    ).params
    got = finetune(adapter, best, data, SPEC, np.random.default_rng(5), validation_share=0.25)
    np.testing.assert_array_equal(got.flatten(), best.flatten())
    moved = finetune(adapter, best, data, SPEC, np.random.default_rng(5))
    assert not np.array_equal(moved.flatten(), best.flatten())


def test_validation_share_is_refused_outside_finetune_and_out_of_range() -> None:
    with pytest.raises(ConfigError, match="validation_share applies to method 'finetune' only"):
        study(method="ditto", validation_share=0.2)
    with pytest.raises(ConfigError, match="validation_share"):
        study(method="finetune", validation_share=0.8)


def _evaluate(site: SiteData, s: StudyConfig) -> dict[str, Any]:
    cfg = round_config(s, "study-1")
    t = Task(
        study_id="study-1",
        round=3,
        site_id="a",
        kind="evaluate",
        params=ZERO,
        config={"seed": 10},
        plan=cfg.plan,
    )
    reply = SiteRuntime(site).evaluate(t)
    assert len(reply.arrays) == 0  # the personal model stays at the site
    return {**reply.metrics, **reply.info}


def test_the_site_runtime_fine_tunes_with_early_stopping() -> None:
    site = SiteData("a", train=rows(100, 2), test=rows(60, 3))
    plain = _evaluate(site, study(method="finetune", epochs=40, lr=0.3))
    stopped = _evaluate(site, study(method="finetune", epochs=40, lr=0.3, validation_share=0.3))
    assert stopped["personal_loss"] != pytest.approx(plain["personal_loss"], abs=1e-6)
    assert stopped["personal_loss"] < stopped["loss"]  # better than the (zero) global model
    tiny = SiteData("a", train=Dataset(X=np.eye(2, 3), y=np.array([0.0, 1.0])), test=site.test)
    failed = _evaluate(tiny, study(method="finetune", validation_share=0.5))
    assert "leave no held-out or no training row" in failed["personalization_error"]
    assert "accuracy" in failed and "personal_accuracy" not in failed


def test_the_plan_carries_validation_share_only_when_set_and_the_steward_reads_it() -> None:
    from fedcare.strategy.plan import plan_for_study, plan_summary

    plain = plan_for_study(study(method="finetune", epochs=5))
    assert "validation_share" not in plain.personalization  # older plans keep their hash
    stopped = plan_for_study(study(method="finetune", epochs=5, validation_share=0.2))
    assert stopped.personalization["validation_share"] == 0.2
    assert stopped.hash != plain.hash
    assert "20% of its training rows held out (early stopping)" in plan_summary(stopped)
