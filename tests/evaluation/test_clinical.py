"""The site summary (fedcare.evaluation.clinical.site_summary) and the vectorized bootstrap
behind its intervals (fedcare.evaluation.bootstrap): numbers equal scikit-learn's and fedcare's
own metrics, intervals behave, every task gives strict JSON."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    brier_score_loss,
    confusion_matrix,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from fedcare.errors import ValidationError
from fedcare.evaluation import bootstrap as boot
from fedcare.evaluation import task_metrics as tm
from fedcare.evaluation.calibration import logistic_recalibration
from fedcare.evaluation.clinical import site_curves, site_summary, summary_problem
from fedcare.evaluation.metrics import accuracy, auroc, cindex

SPEC = {"threshold": 0.5, "bins": 10, "curve_bins": 100, "bootstrap": 200, "confidence": 0.95}


def _binary(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1.0 / (1.0 + np.exp(-(rng.normal(0.0, 1.0, n) + 1.2 * (2 * y - 1))))
    return y, p


def _multiclass(n: int, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.0, (n, k)) + 1.5 * (y[:, None] == np.arange(k))
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, prob


def _summary(task: str, n: int = 120, seed: int = 0, **spec: object) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    time_ = None
    if task == "binary":
        y, s = _binary(n, seed)
    elif task == "multiclass":
        y, s = _multiclass(n, seed=seed)
    elif task == "multilabel":
        y = rng.integers(0, 2, (n, 3))
        s = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, (n, 3)), 0, 1)
    elif task == "regression":
        y = rng.normal(5.0, 2.0, n)
        s = y + rng.normal(0.0, 1.0, n)
    else:
        risk = rng.normal(0.0, 1.0, n)
        time_ = rng.exponential(np.exp(-risk))
        y = (rng.random(n) < 0.7).astype(int)
        s = risk
    return site_summary(task, y, s, time=time_, spec={**SPEC, **spec}, rng=rng)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel", "regression", "survival"])
@pytest.mark.parametrize("n", [0, 1, 2, 40])
def test_every_task_gives_strict_json_and_passes_its_own_checks(task: str, n: int) -> None:
    summary = _summary(task, n)
    text = json.dumps(summary, sort_keys=True, allow_nan=False)
    assert summary_problem(json.loads(text)) is None
    assert summary["n"] == n and summary["task"] == task and summary["version"] == 1
    for entry in summary["metrics"].values():  # type: ignore[attr-defined]
        if n == 0:
            assert entry == {"value": None, "lo": None, "hi": None}


def test_binary_summary_equals_scikit_learn() -> None:
    y, p = _binary(300)
    s = site_summary("binary", y, p, spec={**SPEC, "threshold": 0.4}, rng=np.random.default_rng(1))
    m = {k: v["value"] for k, v in s["metrics"].items()}
    pred = (p >= 0.4).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    assert s["confusion"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["accuracy"] == pytest.approx(np.mean(pred == y), abs=1e-12)
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred), abs=1e-12)
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred), abs=1e-12)
    assert m["ppv"] == pytest.approx(precision_score(y, pred), abs=1e-12)
    assert m["npv"] == pytest.approx(precision_score(1 - y, 1 - pred), abs=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-12)
    assert s["prevalence"] == pytest.approx(y.mean())
    assert s["no_information_rate"] == pytest.approx(max(y.mean(), 1 - y.mean()))
    cal = s["calibration"]
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    kept = [b for b in cal["bins"] if b["n"]]
    np.testing.assert_allclose([b["pos"] / b["n"] for b in kept], prob_true, atol=1e-12)
    np.testing.assert_allclose([b["sum_p"] / b["n"] for b in kept], prob_pred, atol=1e-12)
    assert cal["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    ece = sum(b["n"] * abs(b["pos"] / b["n"] - b["sum_p"] / b["n"]) for b in kept) / 300
    assert cal["ece"] == pytest.approx(ece, abs=1e-12)
    assert sum(s["curve"]["n"]) == 300 and sum(s["curve"]["pos"]) == int(y.sum())


def test_recalibration_equals_an_unpenalized_logistic_fit_with_fisher_standard_errors() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.5, 400)
    p = 1.0 / (1.0 + np.exp(-x))
    y = (rng.random(400) < 1.0 / (1.0 + np.exp(-(0.3 + 0.6 * x)))).astype(int)
    fit = logistic_recalibration(y, p)
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x[:, None], y)
    assert fit["slope"] == pytest.approx(lr.coef_[0, 0], abs=1e-6)
    assert fit["intercept"] == pytest.approx(lr.intercept_[0], abs=1e-6)
    design = np.stack([np.ones_like(x), x], axis=1)
    mu = lr.predict_proba(x[:, None])[:, 1]
    cov = np.linalg.inv(design.T @ (design * (mu * (1 - mu))[:, None]))
    assert fit["intercept_se"] == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-5)
    assert fit["slope_se"] == pytest.approx(np.sqrt(cov[1, 1]), rel=1e-5)
    # a calibrated model: slope near 1, intercept near 0
    y2 = (rng.random(400) < p).astype(int)
    assert logistic_recalibration(y2, p)["slope"] == pytest.approx(1.0, abs=0.3)


def test_recalibration_is_null_when_not_estimable() -> None:
    p = np.array([0.1, 0.2, 0.8, 0.9])
    separated = logistic_recalibration(np.array([0, 0, 1, 1]), p)
    one_class = logistic_recalibration(np.array([1, 1, 1, 1]), p)
    assert set(separated.values()) == {None} and set(one_class.values()) == {None}


def _materialized(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(counts.size), counts.astype(int))


def test_weighted_binary_metrics_equal_the_metrics_of_the_materialized_resample() -> None:
    y, p = _binary(60, seed=4)
    p = np.round(p, 1)  # ties
    w = boot.resample_counts(60, 12, np.random.default_rng(5))
    got = boot.binary_weighted(y, p, 0.5)(w)
    for r in range(12):
        idx = _materialized(w[r])
        yr, pr = y[idx], p[idx]
        assert got["auroc"][r] == pytest.approx(auroc(yr, pr), abs=1e-12)
        assert got["accuracy"][r] == pytest.approx(accuracy(yr, pr), abs=1e-12)
        assert got["brier"][r] == pytest.approx(brier_score_loss(yr, pr), abs=1e-12)
        assert got["sensitivity"][r] == pytest.approx(recall_score(yr, pr >= 0.5), abs=1e-12)


def test_weighted_metrics_of_the_other_tasks_equal_the_materialized_resample() -> None:
    rng = np.random.default_rng(6)
    n = 50
    yc, pc = _multiclass(n, k=4, seed=7)
    yl = rng.integers(0, 2, (n, 3))
    pl = np.clip(0.3 + 0.4 * yl + rng.normal(0, 0.25, (n, 3)), 0, 1)
    yr = rng.normal(0, 1, n)
    pr = yr + rng.normal(0, 0.5, n)
    risk = np.round(rng.normal(0, 1, n), 1)
    t = np.round(rng.exponential(1.0, n), 1)
    ev = rng.integers(0, 2, n)
    w = boot.resample_counts(n, 8, rng)
    mc = boot.multiclass_weighted(yc, pc)(w)
    ml = boot.multilabel_weighted(yl, pl)(w)
    rg = boot.regression_weighted(yr, pr)(w)
    sv = boot.survival_weighted(ev, t, risk)(w)
    for r in range(8):
        i = _materialized(w[r])
        assert mc["macro_auroc"][r] == pytest.approx(tm.macro_auroc(yc[i], pc[i]), abs=1e-12)
        assert mc["balanced_accuracy"][r] == pytest.approx(
            tm.balanced_accuracy(yc[i], pc[i]), abs=1e-12
        )
        assert mc["macro_f1"][r] == pytest.approx(tm.macro_f1(yc[i], pc[i]), abs=1e-12)
        assert mc["log_loss"][r] == pytest.approx(tm.multiclass_log_loss(yc[i], pc[i]), abs=1e-12)
        assert ml["macro_auroc"][r] == pytest.approx(
            tm.macro_auroc(yl[i], pl[i], multilabel=True), abs=1e-12
        )
        assert ml["macro_f1"][r] == pytest.approx(tm.multilabel_macro_f1(yl[i], pl[i]), abs=1e-12)
        assert ml["subset_accuracy"][r] == pytest.approx(tm.subset_accuracy(yl[i], pl[i]))
        assert rg["r2"][r] == pytest.approx(tm.r2(yr[i], pr[i]), abs=1e-12)
        assert rg["rmse"][r] == pytest.approx(tm.rmse(yr[i], pr[i]), abs=1e-12)
        assert sv["cindex"][r] == pytest.approx(cindex(ev[i], t[i], risk[i]), abs=1e-12)


def test_percentile_interval_skips_undefined_resamples() -> None:
    values = np.r_[np.linspace(0.6, 0.8, 60), np.full(40, np.nan)]
    lo, hi = boot.percentile_interval(values, 0.9)  # type: ignore[misc]
    assert lo == pytest.approx(np.quantile(np.linspace(0.6, 0.8, 60), 0.05))
    assert hi == pytest.approx(np.quantile(np.linspace(0.6, 0.8, 60), 0.95))
    assert boot.percentile_interval(np.r_[values[:40], np.full(60, np.nan)], 0.9) is None


def test_one_class_site_has_no_auroc_and_no_interval() -> None:
    y = np.ones(16)
    p = np.linspace(0.3, 0.9, 16)
    s = site_summary("binary", y, p, spec=SPEC, rng=np.random.default_rng(0))
    assert s["metrics"]["auroc"] == {"value": None, "lo": None, "hi": None}
    assert s["metrics"]["specificity"]["value"] is None
    assert s["metrics"]["sensitivity"]["value"] == pytest.approx(np.mean(p >= 0.5))
    curves = site_curves(s)
    assert curves["roc"] is None and set(curves["pr"]["precision"]) == {1.0}
    json.dumps(s, allow_nan=False)


def test_bootstrap_interval_contains_the_value_and_narrows_with_n() -> None:
    widths = {}
    for n in (100, 2000):
        y, p = _binary(n, seed=8)
        w = boot.bootstrap(n, 300, np.random.default_rng(9), boot.binary_weighted(y, p, 0.5))
        for name, value in (("auroc", auroc(y, p)), ("accuracy", accuracy(y, p))):
            lo, hi = boot.percentile_interval(w[name], 0.95)  # type: ignore[misc]
            assert lo < value < hi
            widths[name, n] = hi - lo
    for name in ("auroc", "accuracy"):
        # width shrinks like 1/sqrt(n): 20x the rows, about 4.5x narrower
        assert 3.0 < widths[name, 100] / widths[name, 2000] < 7.0


def test_same_rng_seed_same_summary_and_no_bootstrap_means_no_interval() -> None:
    a, b = _summary("binary", 80, seed=2), _summary("binary", 80, seed=2)
    assert a == b
    none = _summary("binary", 80, bootstrap=0)
    assert all(e["lo"] is None and e["hi"] is None for e in none["metrics"].values())


def test_bootstrap_of_ten_thousand_rows_is_fast() -> None:
    y, p = _binary(10_000)
    start = time.process_time()  # CPU time: robust to a loaded machine
    boot.bootstrap(10_000, 200, np.random.default_rng(0), boot.binary_weighted(y, p, 0.5))
    assert time.process_time() - start < 1.5  # about 0.15 s on one free core


def test_multiclass_confusion_and_prevalence() -> None:
    y, prob = _multiclass(90, k=3, seed=1)
    s = site_summary("multiclass", y, prob, spec=SPEC, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(
        s["confusion"]["matrix"], confusion_matrix(y, prob.argmax(axis=1), labels=[0, 1, 2])
    )
    np.testing.assert_allclose(s["prevalence"], np.bincount(y, minlength=3) / 90)
    assert s["no_information_rate"] == pytest.approx(np.bincount(y).max() / 90)
    assert s["metrics"]["macro_auroc"]["value"] == pytest.approx(
        roc_auc_score(y, prob, multi_class="ovr")
    )


def test_regression_calibration_is_the_least_squares_line() -> None:
    rng = np.random.default_rng(2)
    pred = rng.normal(0, 1, 50)
    y = 0.5 + 0.8 * pred + rng.normal(0, 0.1, 50)
    s = site_summary("regression", y, pred, spec=SPEC, rng=rng)
    slope, intercept = np.polyfit(pred, y, 1)
    assert s["calibration"]["slope"] == pytest.approx(slope, abs=1e-10)
    assert s["calibration"]["intercept"] == pytest.approx(intercept, abs=1e-10)
    assert s["calibration"]["mean_y"] == pytest.approx(y.mean())


def test_bad_inputs_are_refused_with_the_argument_named() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValidationError, match="task must be one of"):
        site_summary("ranking", [0, 1], [0.1, 0.2], spec=SPEC, rng=rng)
    with pytest.raises(ValidationError, match="probabilities"):
        site_summary("binary", [0, 1], [0.1, 1.2], spec=SPEC, rng=rng)
    with pytest.raises(ValidationError, match="scores have shape"):
        site_summary("binary", [0, 1], [0.1, 0.2, 0.3], spec=SPEC, rng=rng)
    with pytest.raises(ValidationError, match="needs time"):
        site_summary("survival", [0, 1], [0.1, 0.2], spec=SPEC, rng=rng)
