"""Personalization at the site: the plan section, Ditto's and FedBN's kept state, fine-tuning,
and that no personal model ever crosses the wire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcare.data.base import Dataset, SiteData
from fedcare.errors import ConfigError, ValidationError
from fedcare.models.base import LocalTrainSpec
from fedcare.models.logistic import LogisticRegression, logistic_loss_and_grad
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.records.plan import TrainingPlan
from fedcare.records.study import StudyConfig
from fedcare.site.personal import (
    PersonalState,
    PersonalStore,
    ditto_step,
    fedbn_keys,
    fedbn_split,
    fedbn_start,
    personal_method,
    personal_train_spec,
)
from fedcare.site.runtime import SiteRuntime
from fedcare.strategy.driver import round_config
from fedcare.strategy.plan import plan_for_study, plan_summary


def rows(n: int, seed: int, shift: float = 0.0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] - shift * X[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(np.float64)
    return Dataset(X=X, y=y)


def study(**changes: Any) -> StudyConfig:
    base: dict[str, Any] = {
        "name": "p",
        "dataset": {"name": "synthetic"},
        "model": {"kind": "logistic"},
        "training": {"lr": 0.1, "epochs": 2, "batch_size": 10},
        "rounds": 3,
    }
    return StudyConfig.from_dict({**base, **changes})


def task(s: StudyConfig, kind: str, round: int, params: ArrayRecord) -> Task:
    cfg = round_config(s, "study-1")
    config = dict(s.training.as_config()) if kind == "fit" else {}
    return Task(
        study_id="study-1",
        round=round,
        site_id="a",
        kind=kind,  # type: ignore[arg-type]
        params=params,
        config={**config, "seed": 7 + round},
        plan=cfg.plan,
    )


@pytest.fixture
def site() -> SiteData:
    return SiteData("a", train=rows(80, 0, shift=1.5), test=rows(40, 1, shift=1.5))


ZERO = ArrayRecord({"weight": np.zeros(3), "bias": np.zeros(())})


# --- the plan ---------------------------------------------------------------------------------


def test_plan_carries_the_section_and_its_hash_changes_with_it() -> None:
    plain = plan_for_study(study())
    ditto = plan_for_study(study(personalization={"method": "ditto", "lam": 0.1}))
    other = plan_for_study(study(personalization={"method": "ditto", "lam": 0.2}))
    assert "personalization" not in plain.content()  # plans without it hash as before
    assert ditto.content()["personalization"] == {
        "method": "ditto",
        "epochs": None,
        "lr": None,
        "lam": 0.1,
    }
    assert len({plain.hash, ditto.hash, other.hash}) == 3
    # a task plan round-trips; a stored plan without the key reads as none
    assert TrainingPlan.from_task_plan(ditto.to_task_plan()).hash == ditto.hash
    stored = {k: v for k, v in plain.to_task_plan().items() if k != "personalization"}
    assert TrainingPlan.from_task_plan(stored).personalization == {}


def test_steward_summary_says_what_the_site_trains_and_keeps() -> None:
    text = plan_summary(plan_for_study(study(personalization={"method": "finetune", "lr": 0.05})))
    assert "personal:" in text and "fine-tunes the final model" in text
    assert "1 epoch(s), lr 0.05" in text and "never sent" in text and "personal_*" in text
    ditto = plan_summary(plan_for_study(study(personalization={"method": "ditto", "lam": 0.3})))
    assert "Ditto" in ditto and "lam=0.3" in ditto
    assert "personal:" not in plan_summary(plan_for_study(study()))


def test_zero_epochs_dp_and_fedbn_without_normalization_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"personalization\.epochs"):
        study(personalization={"method": "finetune", "epochs": 0})
    with pytest.raises(ConfigError, match="differential privacy"):
        study(
            personalization={"method": "ditto"},
            privacy={"mode": "private", "epsilon": 5.0},
        )
    with pytest.raises(ConfigError, match="has none"):
        plan_for_study(study(personalization={"method": "fedbn"}))
    with pytest.raises(ConfigError, match="no batch-normalization"):
        fedbn_keys({"fc.weight": np.zeros(2), "fc.bias": np.zeros(1)})
    with pytest.raises(ConfigError, match=">= 1"):
        personal_train_spec(LocalTrainSpec(), {"epochs": 0}, default_epochs=None)


# --- the numbers --------------------------------------------------------------------------------


def test_ditto_step_follows_the_ditto_gradient_exactly() -> None:
    data = rows(30, 3)
    w = ArrayRecord({"weight": np.array([0.5, -0.2, 0.1]), "bias": np.array(0.3)})
    v = ArrayRecord({"weight": np.array([-0.4, 0.6, 0.0]), "bias": np.array(-0.1)})
    lam, lr, steps = 0.7, 0.2, 5
    spec = LocalTrainSpec(epochs=steps, lr=lr)  # full batch: one step per epoch
    got = ditto_step(LogisticRegression(), v, w, data, spec, lam, np.random.default_rng(0))
    theta = {k: np.array(a, dtype=np.float64) for k, a in v.items()}
    for _ in range(steps):  # grad F_k(v) + lam (v - w), by hand
        _, g = logistic_loss_and_grad(theta, data.X, data.y)
        theta = {k: theta[k] - lr * (g[k] + lam * (theta[k] - w[k])) for k in theta}
    for k in theta:
        np.testing.assert_allclose(got[k], theta[k], rtol=1e-12, atol=1e-12)


def test_fedbn_keeps_normalization_arrays_and_sends_no_change_to_them() -> None:
    params = ArrayRecord(
        {
            "conv.weight": np.ones(4),
            "bn.weight": np.ones(2),
            "bn.bias": np.zeros(2),
            "bn.running_mean": np.zeros(2),
            "bn.running_var": np.ones(2),
            "bn.num_batches_tracked": np.array(0),
        }
    )
    keys = fedbn_keys(params)
    assert set(keys) == {k for k in params if k.startswith("bn.")}
    own = ArrayRecord({k: params[k] + 5 for k in keys})
    start = fedbn_start(params, own)
    assert np.array_equal(start["bn.running_mean"], [5, 5]) and np.array_equal(
        start["conv.weight"], params["conv.weight"]
    )
    trained = start.map(lambda a: a + 1)
    update, kept = fedbn_split(trained - params, trained, keys)
    assert all(not update[k].any() for k in keys)
    assert np.array_equal(update["conv.weight"], np.ones(4))
    assert np.array_equal(kept["bn.running_var"], [7, 7])


# --- the site runtime -------------------------------------------------------------------------


def test_finetune_reports_personal_metrics_at_the_final_round_only(site: SiteData) -> None:
    s = study(personalization={"method": "finetune", "epochs": 3, "lr": 0.5})
    runtime = SiteRuntime(site)
    early = runtime.evaluate(task(s, "evaluate", 2, ZERO))
    assert not any(k.startswith("personal_") for k in early.metrics)
    final = runtime.evaluate(task(s, "evaluate", 3, ZERO))
    assert final.metrics["accuracy"] == pytest.approx(early.metrics["accuracy"])
    assert {"personal_accuracy", "personal_auroc", "personal_loss"} <= set(final.metrics)
    assert "personal_n" not in final.metrics
    assert final.metrics["personal_loss"] < final.metrics["loss"]  # trained on its own rows
    assert len(final.arrays) == 0


def test_ditto_state_survives_a_site_restart(site: SiteData, tmp_path: Path) -> None:
    s = study(personalization={"method": "ditto", "lam": 0.1})
    first = SiteRuntime(site, state_dir=tmp_path)
    first.fit(task(s, "fit", 1, ZERO))
    assert list(tmp_path.glob("personal-*.npz"))
    before = first.evaluate(task(s, "evaluate", 1, ZERO)).metrics
    restarted = SiteRuntime(site, state_dir=tmp_path)
    after = restarted.evaluate(task(s, "evaluate", 1, ZERO)).metrics
    assert after["personal_loss"] == before["personal_loss"]
    # round 2 continues from the same v_k on both
    w2 = ArrayRecord({"weight": np.array([0.3, 0.0, 0.0]), "bias": np.array(0.0)})
    first.fit(task(s, "fit", 2, w2))
    restarted.fit(task(s, "fit", 2, w2))
    a = first.personal.get("study-1")
    b = restarted.personal.get("study-1")
    assert a is not None and b is not None
    np.testing.assert_array_equal(a.after.flatten(), b.after.flatten())
    # a retried round 2 starts from the v_k before round 2, not after it
    assert b.before is not None
    np.testing.assert_array_equal(b.for_round(2).flatten(), b.before.flatten())  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="older than"):
        b.for_round(1)


def test_ditto_sends_the_plain_update_and_keeps_v_k(site: SiteData) -> None:
    plain = SiteRuntime(site).fit(task(study(), "fit", 1, ZERO))
    s = study(personalization={"method": "ditto", "lam": 0.01, "lr": 0.5})
    runtime = SiteRuntime(site)
    reply = runtime.fit(task(s, "fit", 1, ZERO))
    assert list(reply.arrays) == list(plain.arrays)
    np.testing.assert_array_equal(reply.arrays.flatten(), plain.arrays.flatten())
    state = runtime.personal.get("study-1")
    assert state is not None and state.before is None
    assert not np.allclose(state.after.flatten(), reply.arrays.flatten())


def test_personal_store_round_trip_without_before(tmp_path: Path) -> None:
    store = PersonalStore(tmp_path)
    store.put("x", PersonalState(1, None, ZERO))
    again = PersonalStore(tmp_path).get("x")
    assert again is not None and again.before is None and again.round == 1
    assert PersonalStore(tmp_path).get("other") is None


@pytest.mark.parametrize("method", ["ditto", "finetune"])
def test_no_personal_model_is_ever_in_a_reply(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedcare.site.runtime as runtime_module
    from fedcare.simulation.run import grid_for, train_on_grid
    from fedcare.strategy.loop import evaluate_on_sites

    made: list[ArrayRecord] = []  # every personal model the sites trained (a spy, real code)
    for name in ("ditto_step", "finetune"):
        real = getattr(runtime_module, name)

        def spy(*args: Any, _real: Any = real, **kwargs: Any) -> ArrayRecord:
            out: ArrayRecord = _real(*args, **kwargs)
            made.append(out)
            return out

        monkeypatch.setattr(runtime_module, name, spy)
    sites = [
        SiteData(f"s{i}", train=rows(60, i, shift=i), test=rows(30, 10 + i, shift=i))
        for i in range(3)
    ]
    s = study(rounds=2, personalization={"method": method, "lam": 0.1, "lr": 0.3, "epochs": 2})
    grid = grid_for(sites, record=True)
    model = train_on_grid(grid, s, (3,), label="federated")
    per_site, failures = evaluate_on_sites(grid, round_config(s, "p/federated"), 2, model.params)
    assert not failures and all("personal_accuracy" in m for m in per_site.values())
    # ditto: 3 sites x 2 rounds; finetune: 3 sites at the loop's last evaluation and here
    assert len(made) == 6
    replies = [m for m in grid.wire if isinstance(m, Reply)]
    sent = [a for r in replies for a in r.arrays.values()]
    assert sent  # the fit updates
    for own in made:
        for array in own.values():
            assert not any(np.array_equal(array, x) for x in sent)
            assert not any(np.array_equal(array, x) for x in sent if x.shape == array.shape)
    for r in replies:
        if r.kind == "evaluate":
            assert len(r.arrays) == 0
            assert set(r.info) <= {"dataset_fingerprint", "num_rows", "validation"}
        if r.kind == "fit":
            assert set(r.arrays) == {"weight", "bias"}


def bn_net(input_shape: tuple[int, ...]) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Linear(input_shape[0], 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)
    )


def test_fedbn_site_keeps_its_normalization_layers_across_rounds_and_restarts(
    site: SiteData, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from fedcare.models.torch import make_torch_adapter

    adapter = make_torch_adapter(bn_net, "binary")
    params = adapter.init_params((3,), np.random.default_rng(0))
    s = study(personalization={"method": "ditto"})  # a logistic plan, made FedBN by hand
    plan = {**round_config(s, "study-1").plan, "personalization": {"method": "fedbn"}}

    def fedbn_task(kind: str, round: int, p: ArrayRecord) -> Task:
        config = {"lr": 0.1, "epochs": 2, "batch_size": 10} if kind == "fit" else {}
        return Task("study-1", round, "a", kind, p, {**config, "seed": round}, plan=plan)  # type: ignore[arg-type]

    runtime = SiteRuntime(site, state_dir=tmp_path, model_builder=lambda _spec: adapter)
    reply = runtime.fit(fedbn_task("fit", 1, params))
    bn = [k for k in params if k.startswith("1.")]
    assert set(bn) == {
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    }
    assert all(not reply.arrays[k].any() for k in bn)  # no change to them leaves
    assert reply.arrays["0.weight"].any()
    saved = runtime.personal.get("study-1")
    assert saved is not None and saved.after["1.running_mean"].any()  # the site's own statistics
    # the personal model is the global one with the site's own normalization layers
    glob = runtime.evaluate(fedbn_task("evaluate", 1, params)).metrics
    own = adapter.loss(fedbn_start(params, saved.after), site.test)
    assert glob["personal_loss"] == pytest.approx(own)
    assert glob["personal_loss"] != pytest.approx(glob["loss"])
    # a restarted site starts round 2 from its own layers, not the global ones
    restarted = SiteRuntime(site, state_dir=tmp_path, model_builder=lambda _spec: adapter)
    first = runtime.fit(fedbn_task("fit", 2, params))
    second = restarted.fit(fedbn_task("fit", 2, params))
    np.testing.assert_array_equal(first.arrays.flatten(), second.arrays.flatten())
    fresh = SiteRuntime(site, model_builder=lambda _spec: adapter).fit(fedbn_task("fit", 2, params))
    assert not np.array_equal(fresh.arrays.flatten(), second.arrays.flatten())


def test_a_failing_personal_model_costs_its_metrics_not_the_evaluation(site: SiteData) -> None:
    s = study(personalization={"method": "finetune", "epochs": 3, "lr": 1e300})
    big = Dataset(X=site.train.X * 1e10, y=site.train.y)  # lr * gradient overflows
    reply = SiteRuntime(SiteData("a", big, site.test)).evaluate(task(s, "evaluate", 3, ZERO))
    assert "diverged" in reply.info["personalization_error"]
    assert "accuracy" in reply.metrics
    assert not any(k.startswith("personal_") for k in reply.metrics)


def test_the_site_refuses_personalization_under_differential_privacy() -> None:
    from fedcare.privacy.dp_sgd import DpSgdSpec

    with pytest.raises(ConfigError, match="private"):
        personal_method({"personalization": {"method": "ditto"}, "privacy_mode": "private"})
    dp = LocalTrainSpec(dp=DpSgdSpec(max_grad_norm=1.0, delta=1e-5, noise_multiplier=1.0))
    with pytest.raises(ConfigError, match="DP-SGD"):
        personal_train_spec(dp, {"method": "finetune"}, default_epochs=1)
