"""The overall block (fedcare.evaluation.clinical_pool.combine_sites) from site summaries equals
scikit-learn on the pooled rows; curves, DeLong, Wilson and net benefit from binned counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    precision_recall_curve,
    r2_score,
    roc_auc_score,
    roc_curve,
)

from fedcare.evaluation.clinical import combine_sites, site_curves, site_summary
from fedcare.evaluation.curves import auroc_delong, histogram, net_benefit, wilson_interval

SPEC = {"threshold": 0.5, "bins": 10, "curve_bins": 100, "bootstrap": 50, "confidence": 0.95}
SIZES = (16, 43, 60, 81)


def _sites(p_of: object = None, seed: int = 0) -> tuple[dict[str, dict], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    per_site, ys, ps = {}, [], []
    for i, n in enumerate(SIZES):
        y = (rng.random(n) < 0.3 + 0.15 * i).astype(int)
        p = 1.0 / (1.0 + np.exp(-(rng.normal(0.0, 1.0, n) + 1.3 * (2 * y - 1) + 0.2 * i)))
        if p_of == "grid":  # scores on the centres of the 100 histogram bins
            p = (np.floor(p * 100) + 0.5) / 100
        s = site_summary("binary", y, p, spec=SPEC, rng=rng)
        per_site[f"site{i}"] = json.loads(json.dumps(s, allow_nan=False))
        ys.append(y)
        ps.append(p)
    return per_site, np.concatenate(ys), np.concatenate(ps)


def _delong_rows(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """DeLong's AUROC and standard error straight from the rows (O(mn) reference)."""
    x, z = p[y == 1], p[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = psi.mean()
    var = v10.var(ddof=1) / x.size + v01.var(ddof=1) / z.size
    return float(auc), math.sqrt(var)


def test_pooled_calibration_brier_and_confusion_equal_scikit_learn() -> None:
    per_site, y, p = _sites()
    overall = combine_sites(per_site, SPEC)
    assert overall["n"] == y.size == sum(SIZES) and overall["sites"] == 4
    curve = overall["calibration"]["curve"]
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(curve["prob_true"], prob_true, rtol=0, atol=1e-9)
    np.testing.assert_allclose(curve["prob_pred"], prob_pred, rtol=0, atol=1e-9)
    assert overall["calibration"]["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-9)
    assert overall["metrics"]["brier"]["value"] == overall["calibration"]["brier"]
    tn, fp, fn, tp = confusion_matrix(y, (p >= 0.5).astype(int)).ravel()
    assert overall["confusion"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    assert overall["prevalence"] == pytest.approx(y.mean(), abs=1e-12)
    assert overall["no_information_rate"] == pytest.approx(max(y.mean(), 1 - y.mean()))
    bins = overall["calibration"]["bins"]
    ece = sum(abs(b["pos"] - b["sum_p"]) for b in bins) / y.size
    assert overall["calibration"]["ece"] == pytest.approx(ece, abs=1e-12)
    json.dumps(overall, allow_nan=False)


def test_binned_auroc_delong_and_curves_are_exact_when_scores_sit_on_bin_centres() -> None:
    per_site, y, p = _sites("grid", seed=1)
    overall = combine_sites(per_site, SPEC)
    auc = overall["metrics"]["auroc"]
    assert auc["method"] == "delong-binned"
    assert auc["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    ref_auc, ref_se = _delong_rows(y, p)
    assert auc["value"] == pytest.approx(ref_auc, abs=1e-12)
    assert auc["se"] == pytest.approx(ref_se, abs=1e-12)
    assert auc["lo"] < auc["value"] < auc["hi"]
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(overall["roc"]["fpr"], fpr, atol=1e-12)
    np.testing.assert_allclose(overall["roc"]["tpr"], tpr, atol=1e-12)
    precision, recall, _ = precision_recall_curve(y, p)
    np.testing.assert_allclose(overall["pr"]["precision"], precision[:-1][::-1], atol=1e-12)
    np.testing.assert_allclose(overall["pr"]["recall"], recall[:-1][::-1], atol=1e-12)
    # one site's curves from its own histogram
    first = per_site["site0"]
    fpr0, tpr0, _ = roc_curve(*_rows_of(first), drop_intermediate=False)
    np.testing.assert_allclose(site_curves(first)["roc"]["fpr"], fpr0, atol=1e-12)
    np.testing.assert_allclose(site_curves(first)["roc"]["tpr"], tpr0, atol=1e-12)


def _rows_of(summary: dict) -> tuple[np.ndarray, np.ndarray]:
    """Rows with the bin-centre score that a grid-scored site's histogram describes."""
    curve = summary["curve"]
    k = curve["bins"]
    y, p = [], []
    for g, (n, pos) in enumerate(zip(curve["n"], curve["pos"], strict=True)):
        y += [1] * pos + [0] * (n - pos)
        p += [(g + 0.5) / k] * n
    return np.array(y), np.array(p)


def test_binned_auroc_is_close_for_continuous_scores() -> None:
    per_site, y, p = _sites(seed=2)
    auc = combine_sites(per_site, SPEC)["metrics"]["auroc"]["value"]
    assert auc == pytest.approx(roc_auc_score(y, p), abs=0.005)


def test_delong_interval_on_a_small_hand_example() -> None:
    # positives in bins 2, 3, 3; negatives in bins 0, 1, 3 (4 bins)
    n, pos = [1, 1, 1, 3], [0, 0, 1, 2]
    out = auroc_delong(n, pos, 0.95)
    # pairs: pos@2 beats 2 negs, ties none -> 2/3; each pos@3 beats 2, ties 1 -> 2.5/3
    assert out["value"] == pytest.approx((2 + 2.5 + 2.5) / 9)
    v10 = np.array([2, 2.5, 2.5]) / 3
    v01 = np.array([1.0, 1.0, 1.0 / 3])  # neg@0, neg@1 below all; neg@3 ties 2 of 3 pos
    var = v10.var(ddof=1) / 3 + v01.var(ddof=1) / 3
    assert out["se"] == pytest.approx(math.sqrt(var))
    a = out["value"]
    half = 1.959963984540054 * out["se"] / (a * (1 - a))
    assert out["lo"] == pytest.approx(1 / (1 + math.exp(-(math.log(a / (1 - a)) - half))))


def test_wilson_interval_equals_scipy() -> None:
    for k, n in ((0, 10), (7, 16), (15, 16), (120, 180)):
        ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
        lo, hi = wilson_interval(k, n, 0.95)  # type: ignore[misc]
        assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)
    assert wilson_interval(0, 0, 0.95) is None


def test_net_benefit_equals_the_rows() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.35 * y + rng.random(500) * 0.65, 0, 1)
    nb = net_benefit(*histogram(y, p, 100))
    assert nb is not None and nb["thresholds"][0] == pytest.approx(0.01)
    assert nb["thresholds"][-1] == pytest.approx(0.99) and len(nb["thresholds"]) == 99
    for t, model, treat_all in zip(nb["thresholds"], nb["model"], nb["treat_all"], strict=True):
        treat = p > t
        tp, fp = np.sum(treat & (y == 1)), np.sum(treat & (y == 0))
        assert model == pytest.approx(tp / 500 - fp / 500 * t / (1 - t), abs=1e-12)
        prev = y.mean()
        assert treat_all == pytest.approx(prev - (1 - prev) * t / (1 - t), abs=1e-12)


def test_meta_analysis_block_of_four_sites() -> None:
    per_site, _, _ = _sites(seed=4)
    meta = combine_sites(per_site, SPEC)["meta"]
    assert meta["auroc"]["k"] == 4 and meta["auroc"]["scale"] == "logit"
    assert meta["auroc"]["lo"] < meta["auroc"]["random"] < meta["auroc"]["hi"]
    assert meta["auroc"]["pi_lo"] <= meta["auroc"]["lo"]
    assert 0.0 <= meta["auroc"]["i2"] <= 1.0 and meta["auroc"]["tau2"] >= 0.0
    estimable = [s for s in per_site.values() if s["calibration"]["slope"] is not None]
    assert meta["calibration_slope"]["k"] == len(estimable) >= 3
    one = combine_sites({"a": per_site["site1"]}, SPEC)["meta"]["auroc"]
    assert one["k"] == 1 and one["tau2"] is None and one["pi_lo"] is None
    assert one["random"] == pytest.approx(per_site["site1"]["metrics"]["auroc"]["value"])


def test_other_tasks_pool_exactly_where_the_counts_allow() -> None:
    rng = np.random.default_rng(5)
    per_site, ys, ps = {}, [], []
    for i, n in enumerate(SIZES):
        y = rng.normal(i, 2.0, n)
        pred = y + rng.normal(0.3, 1.0, n)
        per_site[f"s{i}"] = site_summary("regression", y, pred, spec=SPEC, rng=rng)
        ys.append(y)
        ps.append(pred)
    y, pred = np.concatenate(ys), np.concatenate(ps)
    m = combine_sites(per_site, SPEC)["metrics"]
    assert m["mae"]["value"] == pytest.approx(mean_absolute_error(y, pred), abs=1e-9)
    assert m["rmse"]["value"] == pytest.approx(np.sqrt(np.mean((y - pred) ** 2)), abs=1e-9)
    assert m["r2"]["value"] == pytest.approx(r2_score(y, pred), abs=1e-9)

    per_site, ys, ps = {}, [], []
    for i, n in enumerate(SIZES):
        y = rng.integers(0, 3, n)
        logits = rng.normal(0, 1, (n, 3)) + 1.2 * (y[:, None] == np.arange(3))
        prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        per_site[f"s{i}"] = site_summary("multiclass", y, prob, spec=SPEC, rng=rng)
        ys.append(y)
        ps.append(prob.argmax(axis=1))
    y, pred = np.concatenate(ys), np.concatenate(ps)
    out = combine_sites(per_site, SPEC)
    assert out["metrics"]["accuracy"]["value"] == pytest.approx(np.mean(y == pred))
    assert out["metrics"]["balanced_accuracy"]["value"] == pytest.approx(
        balanced_accuracy_score(y, pred)
    )
    assert out["metrics"]["macro_f1"]["value"] == pytest.approx(f1_score(y, pred, average="macro"))
    np.testing.assert_array_equal(out["confusion"]["matrix"], confusion_matrix(y, pred))
    assert out["meta"]["macro_auroc"]["k"] == 4


@pytest.mark.parametrize("task", ["multilabel", "survival"])
def test_remaining_tasks_combine_to_strict_json(task: str) -> None:
    rng = np.random.default_rng(6)
    per_site = {}
    for i, n in enumerate((0, 12, 30)):
        if task == "multilabel":
            y = rng.integers(0, 2, (n, 2))
            s = site_summary(task, y, rng.random((n, 2)), spec=SPEC, rng=rng)
        else:
            s = site_summary(
                task, rng.integers(0, 2, n), rng.random(n), time=rng.random(n), spec=SPEC, rng=rng
            )
        per_site[f"s{i}"] = s
    out = combine_sites(per_site, SPEC)
    json.dumps(out, allow_nan=False)
    assert out["n"] == 42 and out["sites"] == 3
    assert combine_sites({}, SPEC) == {}


def test_sites_with_empty_or_one_class_test_sets_do_not_break_the_overall_block() -> None:
    rng = np.random.default_rng(7)
    per_site = {
        "empty": site_summary("binary", [], [], spec=SPEC, rng=rng),
        "all_sick": site_summary("binary", np.ones(15), rng.random(15), spec=SPEC, rng=rng),
        "perfect": site_summary(
            "binary", [0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.8, 0.9], spec=SPEC, rng=rng
        ),
    }
    out = combine_sites(per_site, SPEC)
    json.dumps(out, allow_nan=False)
    assert out["n"] == 20
    assert out["meta"]["auroc"]["k"] == 1  # the perfect site, moved off 1 (all_sick: no AUROC)
    assert 0.0 < out["meta"]["auroc"]["random"] < 1.0


def test_sites_with_different_bin_counts_pool_on_the_common_coarser_bins() -> None:
    rng = np.random.default_rng(8)
    y1, y2 = rng.integers(0, 2, 50), rng.integers(0, 2, 70)
    p1, p2 = rng.random(50), rng.random(70)
    fine = site_summary("binary", y1, p1, spec=SPEC, rng=rng)
    coarse_spec = {**SPEC, "bins": 5, "curve_bins": 50}
    coarse = site_summary("binary", y2, p2, spec=coarse_spec, rng=rng)
    out = combine_sites({"fine": fine, "coarse": coarse}, SPEC)
    y, p = np.r_[y1, y2], np.r_[p1, p2]
    assert len(out["calibration"]["bins"]) == 5
    prob_true, prob_pred = calibration_curve(y, p, n_bins=5, strategy="uniform")
    np.testing.assert_allclose(out["calibration"]["curve"]["prob_true"], prob_true, atol=1e-9)
    np.testing.assert_allclose(out["calibration"]["curve"]["prob_pred"], prob_pred, atol=1e-9)
    n, pos = histogram(y, p, 50)
    assert out["metrics"]["auroc"]["value"] == auroc_delong(n, pos, 0.95)["value"]
