import numpy as np
import pytest

from fedcare.data.base import Dataset, SiteData
from fedcare.records import ArrayRecord, Task
from fedcare.site.app import SiteApp

N_TRAIN, N_TEST, D = 40, 17, 3
PLAN = {"model": {"kind": "logistic"}, "preprocessing": {"impute": "mean", "scale": "local"}}


def site_data(seed: int = 0) -> SiteData:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N_TRAIN + N_TEST, D))
    y = (X[:, 0] + 0.3 * rng.normal(size=len(X)) > 0).astype(float)
    return SiteData("a", Dataset(X[:N_TRAIN], y[:N_TRAIN]), Dataset(X[N_TRAIN:], y[N_TRAIN:]))


def params(w=(0.0, 0.0, 0.0), b=0.0) -> ArrayRecord:
    return ArrayRecord({"weight": np.array(w, dtype=float), "bias": np.array(b)})


def task(kind="fit", **kw) -> Task:
    base = {
        "study_id": "s",
        "round": 1,
        "site_id": "a",
        "kind": kind,
        "params": params(),
        "config": {"lr": 0.1, "epochs": 1, "seed": 1},
        "plan": PLAN,
    }
    return Task(**{**base, **kw})


def test_fit_replies_with_an_update_and_no_rows() -> None:
    reply = SiteApp(site_data())(task())
    assert reply.ok, reply.error
    assert reply.num_samples == N_TRAIN
    assert reply.arrays.shapes == {"weight": (D,), "bias": ()}
    assert reply.arrays.norm() > 0
    assert set(reply.metrics) >= {"num_steps"}


def test_evaluate_reports_metrics_over_the_test_rows() -> None:
    reply = SiteApp(site_data())(task("evaluate", params=params(w=(2.0, 0.0, 0.0))))
    assert reply.ok, reply.error
    assert reply.num_samples == N_TEST and reply.metrics["n"] == N_TEST
    assert reply.metrics["accuracy"] > 0.7 and reply.metrics["auroc"] > 0.8
    assert len(reply.arrays) == 0


def test_scaffold_control_variate_is_the_mean_gradient() -> None:
    """One full-batch step from w = 0 (no correction yet): c_i+ equals the gradient at 0."""
    data = site_data()
    app = SiteApp(data)
    plan = {"model": {"kind": "logistic"}, "preprocessing": {"impute": "none", "scale": "none"}}
    t = task(
        plan=plan,
        config={"lr": 0.5, "epochs": 1, "seed": 1, "algorithm": "scaffold"},
        arrays={"control": params()},
    )
    reply = app(t)
    assert reply.ok, reply.error
    X, y = data.train.X, data.train.y
    grad_w = X.T @ (0.5 - y) / len(y)
    grad_b = np.mean(0.5 - y)
    np.testing.assert_allclose(reply.arrays["control/weight"], grad_w, rtol=1e-9)
    np.testing.assert_allclose(reply.arrays["control/bias"], grad_b, rtol=1e-9)
    np.testing.assert_allclose(reply.arrays["delta/weight"], -0.5 * grad_w, rtol=1e-9)
    # the site keeps c_i; the next round's correction is c - c_i
    np.testing.assert_allclose(app.runtime.controls["s"].after["weight"], grad_w, rtol=1e-9)


def test_scaffold_state_survives_restarts_and_retries_repeat_exactly(tmp_path) -> None:
    """A retried round starts from the same c_i; a restarted site reads c_i from disk."""
    plan = {"model": {"kind": "logistic"}, "preprocessing": {"impute": "none", "scale": "none"}}
    config = {"lr": 0.5, "epochs": 1, "seed": 1, "algorithm": "scaffold"}
    data = site_data()
    control = ArrayRecord({"weight": np.array([0.1, -0.2, 0.0]), "bias": np.array(0.05)})

    def fit(app: SiteApp, round: int):
        reply = app(task(plan=plan, config=config, round=round, arrays={"control": control}))
        assert reply.ok, reply.error
        return reply.arrays

    app = SiteApp(data, state_dir=tmp_path)
    first = fit(app, 1)
    assert fit(app, 1) == first  # the retry of round 1 sees the same c_i
    second = fit(app, 2)
    assert second != first  # round 2 starts from the updated c_i
    restarted = SiteApp(data, state_dir=tmp_path)
    assert fit(restarted, 2) == second  # from disk: round 2 again, same as before
    stale = restarted(task(plan=plan, config=config, round=1, arrays={"control": control}))
    assert (
        stale.error is not None and "older than this site's SCAFFOLD state" in stale.error.message
    )


@pytest.mark.parametrize(
    ("changes", "kind", "message"),
    [
        ({"site_id": "b"}, "wrong-site", "reached site 'a'"),
        (
            {"params": ArrayRecord({"weight": np.zeros(5), "bias": np.zeros(())})},
            "ValidationError",
            "array 'weight' has shape (5,), expected (3,)",
        ),
        ({"params": params(w=(np.nan, 0, 0))}, "ValidationError", "NaN"),
        (
            {"config": {"lr": 0.1, "learning_rate": 3}},
            "ConfigError",
            "unknown keys ['learning_rate']",
        ),
        (
            {"plan": {"model": {"kind": "logistic"}, "preprocessing": {"scale": "global"}}},
            "ValidationError",
            "no 'preprocess' statistics",
        ),
        ({"plan": {"model": {"kind": "forest"}}}, "ConfigError", "forest"),
    ],
)
def test_bad_tasks_get_error_replies_with_reasons(changes, kind, message) -> None:
    reply = SiteApp(site_data())(task(**changes))
    assert reply.error is not None
    assert reply.error.kind == kind
    assert message in reply.error.message


def test_stats_suppress_small_cells() -> None:
    data = site_data()
    X = data.train.X.copy()
    X[3:, 2] = np.nan  # only 3 values of feature 2 remain
    app = SiteApp(SiteData("a", Dataset(X, data.train.y), data.test))
    reply = app(task("stats", params=ArrayRecord()))
    assert reply.ok, reply.error
    np.testing.assert_array_equal(reply.arrays["suppressed"], [0, 0, 1])
    assert reply.arrays["count"][2] == 0 and reply.arrays["sum"][2] == 0
    assert reply.arrays["count"][0] == N_TRAIN


def test_middleware_can_refuse_before_training() -> None:
    from fedcare.records import Reply

    ran: list[str] = []

    def deny_fit(t: Task, nxt):
        if t.kind == "fit":
            return Reply.failure(t, "refused", "plan not approved")
        ran.append(t.kind)
        return nxt(t)

    app = SiteApp(site_data(), mods=[deny_fit])
    assert app(task()).error.message == "plan not approved"  # type: ignore[union-attr]
    assert app(task("evaluate")).ok and ran == ["evaluate"]
