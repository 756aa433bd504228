"""Subgroup labels, site tables (against pandas groupby), small-cell and complementary
suppression, and combined metrics and fairness gaps (hand-computed, and fairlearn's numbers
when it is installed)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fedcare.errors import ConfigError, ValidationError
from fedcare.evaluation.subgroups import (
    combine_subgroups,
    group_labels,
    level_order,
    subgroup_summary,
)

SPECS = [{"feature": "age", "bands": [50, 60]}, {"feature": "sex", "name": "Sex"}]


def test_group_labels_bands_categories_and_missing() -> None:
    raw = np.array(
        [[49.9, 1.0], [50.0, 0.0], [59.5, 1.0], [60.0, np.nan], [np.nan, 2.5], [80, 1]],
        dtype=float,
    )
    groups = group_labels(raw, ["age", "sex"], SPECS)
    assert list(groups) == ["age", "Sex"]
    assert groups["age"].tolist() == ["<50", "50-60", "50-60", ">=60", "missing", ">=60"]
    assert groups["Sex"].tolist() == ["1", "0", "1", "missing", "2.5", "1"]
    one_cut = group_labels(raw, ["age", "sex"], [{"feature": "age", "bands": [55.5]}])
    assert one_cut["age"].tolist() == ["<55.5", "<55.5", ">=55.5", ">=55.5", "missing", ">=55.5"]
    text = np.array([["f", None], ["m", 3]], dtype=object)
    assert group_labels(text, ["g", "k"], [{"feature": "g"}, {"feature": "k"}])["k"].tolist() == [
        "missing",
        "3",
    ]


def test_group_labels_errors_name_the_problem() -> None:
    raw = np.zeros((3, 2))
    with pytest.raises(ConfigError, match=r"'bmi' is not a feature.*\['age', 'sex'\]"):
        group_labels(raw, ["age", "sex"], [{"feature": "bmi"}])
    with pytest.raises(ConfigError, match="increasing"):
        group_labels(raw, ["age", "sex"], [{"feature": "age", "bands": [60, 50]}])
    with pytest.raises(ConfigError, match="declared twice"):
        group_labels(raw, ["age", "sex"], [{"feature": "age"}, {"feature": "sex", "name": "age"}])
    with pytest.raises(ConfigError, match="declare 'bands'"):
        group_labels(np.arange(120.0).reshape(60, 2), ["age", "sex"], [{"feature": "age"}])


def test_level_order_reads_bands_and_numbers_by_value() -> None:
    assert level_order([">=60", "missing", "50-60", "<50"]) == ["<50", "50-60", ">=60", "missing"]
    assert level_order(["10", "2", "missing", "b", "a"]) == ["2", "10", "a", "b", "missing"]


def _site(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = np.column_stack([rng.normal(55, 10, n), rng.integers(0, 2, n).astype(float)])
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, n) + shift * raw[:, 1], 0, 1)
    return raw, y, p


def test_site_counts_equal_pandas_groupby() -> None:
    raw, y, p = _site(300, 0)
    groups = group_labels(raw, ["age", "sex"], SPECS)
    table = subgroup_summary(
        "binary", y, p, groups, threshold=0.4, bins=10, min_cell=0, curves=True
    )
    assert table["task"] == "binary" and table["threshold"] == 0.4 and table["bins"] == 10
    frame = pd.DataFrame({"g": groups["age"], "y": y, "p": p, "yhat": (p >= 0.4).astype(int)})
    frame["bin"] = np.searchsorted(np.linspace(0, 1, 11)[1:-1], p)
    for level, rows in frame.groupby("g"):
        cell = table["groups"]["age"]["levels"][level]
        assert cell["n"] == len(rows) and cell["pos"] == rows.y.sum()
        assert cell["tp"] == ((rows.y == 1) & (rows.yhat == 1)).sum()
        assert cell["fp"] == ((rows.y == 0) & (rows.yhat == 1)).sum()
        assert cell["tn"] == ((rows.y == 0) & (rows.yhat == 0)).sum()
        assert cell["fn"] == ((rows.y == 1) & (rows.yhat == 0)).sum()
        assert cell["sum_p"] == pytest.approx(rows.p.sum(), abs=1e-12)
        assert cell["brier_sum"] == pytest.approx(((rows.p - rows.y) ** 2).sum(), abs=1e-12)
        by_bin = rows.groupby("bin").y.agg(["size", "sum"]).reindex(range(10), fill_value=0)
        assert cell["curve_n"] == by_bin["size"].tolist()
        assert cell["curve_pos"] == by_bin["sum"].tolist()
        assert cell["auroc"] == pytest.approx(roc_auc_score(rows.y, rows.p), abs=1e-12)
    plain = subgroup_summary("binary", y, p, groups, threshold=0.4, bins=10, min_cell=0)
    assert plain["bins"] == 0 and "curve_n" not in plain["groups"]["age"]["levels"]["<50"]
    json.dumps(table, allow_nan=False)  # JSON-able as the site sends it


def _withheld_sum_ok(total: int | None, parts: list[int | None], min_cell: int) -> bool:
    """A released total minus its released parts must not give away a small withheld sum."""
    if total is None or None not in parts:
        return True
    rest = total - sum(v for v in parts if v is not None)
    return rest in (0, total) or rest >= min_cell  # rest == total: nothing but the total


def _site_totals(y: np.ndarray, p: np.ndarray, threshold: float, bins: int) -> dict:
    """What the site's own summary releases beside the subgroups."""
    yhat = p >= threshold
    b = np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], p)
    totals = {"n": len(y), "pos": int(y.sum())}
    totals |= {"tp": int(np.sum(yhat & (y == 1))), "fp": int(np.sum(yhat & (y == 0)))}
    totals |= {"tn": int(np.sum(~yhat & (y == 0))), "fn": int(np.sum(~yhat & (y == 1)))}
    for k in range(bins):
        totals[f"curve_n/{k}"] = int(np.sum(b == k))
        totals[f"curve_pos/{k}"] = int(np.sum((b == k) & (y == 1)))
    return totals


def _cell(level: dict, name: str) -> int | None:
    if level["n"] is None:
        return None
    if "/" in name:
        key, k = name.split("/")
        return level[key][int(k)]
    return level[name]


def _check_protected(table: dict, totals: dict, min_cell: int) -> None:
    for group in table["groups"].values():
        levels = list(group["levels"].values())
        for name, total in totals.items():  # site total minus the released levels
            if "/" in name and not any("curve_n" in lv for lv in levels):
                continue
            assert _withheld_sum_ok(total, [_cell(lv, name) for lv in levels], min_cell), name
        for lv in levels:
            if lv["n"] is None:
                assert lv == {"n": None, "suppressed": True}
                continue
            counts = [lv["n"], lv["pos"], lv["tp"], lv["fp"], lv["tn"], lv["fn"]]
            counts += lv.get("curve_n", []) + lv.get("curve_pos", [])
            assert all(c is None or c == 0 or c >= min_cell for c in counts)
            confusion = [lv[k] for k in ("tp", "fp", "tn", "fn")]
            assert _withheld_sum_ok(lv["n"], confusion, min_cell)
            assert _withheld_sum_ok(lv["pos"], [lv["tp"], lv["fn"]], min_cell)
            assert _withheld_sum_ok(lv["n"], lv.get("curve_n", [0]), min_cell)
            assert _withheld_sum_ok(lv["pos"], lv.get("curve_pos", [0]), min_cell)


@pytest.mark.parametrize("seed", range(6))
def test_small_cells_are_withheld_and_cannot_be_derived(seed: int) -> None:
    raw, y, p = _site(60 + 40 * seed, seed)
    raw[:3, 0] = np.nan  # a 'missing' age level of 3 rows
    groups = group_labels(raw, ["age", "sex"], SPECS)
    table = subgroup_summary(
        "binary", y, p, groups, threshold=0.5, bins=5, min_cell=5, curves=seed % 2 == 0
    )
    assert table["groups"]["age"]["levels"]["missing"] == {"n": None, "suppressed": True}
    _check_protected(table, _site_totals(y, p, 0.5, 5), 5)
    # the missing level's 3 rows cannot be found as n minus the other levels
    released = [lv["n"] for lv in table["groups"]["age"]["levels"].values() if lv["n"]]
    assert len(y) - sum(released) >= 5
    assert any(lv["n"] for lv in table["groups"]["Sex"]["levels"].values())


def test_min_cell_one_withholds_nothing() -> None:
    raw, y, p = _site(40, 7)
    raw[0, 0] = np.nan
    groups = group_labels(raw, ["age", "sex"], SPECS)
    table = subgroup_summary("binary", y, p, groups, threshold=0.5, bins=5, min_cell=1)
    assert table["groups"]["age"]["levels"]["missing"]["n"] == 1
    assert "suppressed" not in json.dumps(table)
    for group in table["groups"].values():
        for level in group["levels"].values():
            assert None not in [level[k] for k in ("n", "pos", "tp", "fp", "tn", "fn")]


def test_other_tasks_release_n_and_the_headline_metric() -> None:
    rng = np.random.default_rng(8)
    y = rng.normal(size=50)
    pred = y + rng.normal(0, 0.1, 50)
    labels = {"sex": np.array(["0"] * 30 + ["1"] * 18 + ["2"] * 2)}
    table = subgroup_summary("regression", y, pred, labels, threshold=0.5, bins=10, min_cell=5)
    assert table["metric"] == "mae"
    levels = table["groups"]["sex"]["levels"]
    assert levels["0"] == {"n": 30, "value": pytest.approx(np.mean(np.abs(y - pred)[:30]))}
    # "2" is small; "1" is withheld too, else 50 - 30 would give "2" away
    assert levels["2"] == {"n": None, "suppressed": True}
    assert levels["1"] == {"n": None, "suppressed": True}
    surv = subgroup_summary("survival", y > 0, pred, labels, threshold=0.5, bins=10, min_cell=5)
    assert "unsupported" in surv


def test_bad_inputs_are_rejected() -> None:
    g = {"sex": np.array(["0", "1"])}
    with pytest.raises(ValidationError, match="only 0 and 1"):
        subgroup_summary("binary", [0, 2], [0.1, 0.2], g, threshold=0.5, bins=10, min_cell=5)
    with pytest.raises(ValidationError, match="labels, expected"):
        subgroup_summary("binary", [0], [0.1], g, threshold=0.5, bins=10, min_cell=5)
    with pytest.raises(ConfigError, match="threshold"):
        subgroup_summary("binary", [0, 1], [0.1, 0.2], g, threshold=1.0, bins=10, min_cell=5)


def _rows(tp: int, fn: int, fp: int, tn: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([1] * (tp + fn) + [0] * (fp + tn))
    p = np.array([0.9] * tp + [0.2] * fn + [0.7] * fp + [0.1] * tn)
    return y, p


# group "A": tpr 8/10, fpr 3/10, selection 11/20; group "B": tpr 5/10, fpr 1/10, selection 6/20
HAND = {"A": (8, 2, 3, 7), "B": (5, 5, 1, 9)}


def _hand_site() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = [(_rows(*HAND[g]), g) for g in ("A", "B")]
    y = np.concatenate([r[0] for r, _ in parts])
    p = np.concatenate([r[1] for r, _ in parts])
    g = np.concatenate([[name] * len(r[0]) for r, name in parts])
    return y, p, g


def test_gaps_equal_the_hand_computed_fairlearn_definitions() -> None:
    y, p, g = _hand_site()
    half = np.arange(len(y)) % 2 == 0  # two sites with half the rows each
    tables = {
        site: subgroup_summary(
            "binary", y[m], p[m], {"grp": g[m]}, threshold=0.5, bins=10, min_cell=0, curves=True
        )
        for site, m in (("s1", half), ("s2", ~half))
    }
    combined = combine_subgroups(tables, min_cell=0)
    group = combined["groups"]["grp"]
    a = group["levels"]["A"]
    assert (a["n"], a["tp"], a["fn"], a["fp"], a["tn"]) == (20, 8, 2, 3, 7)
    assert a["metrics"]["tpr"] == pytest.approx(0.8) and a["metrics"]["fpr"] == pytest.approx(0.3)
    gaps = group["gaps"]
    assert gaps["true_positive_rate_difference"] == pytest.approx(0.3)
    assert gaps["false_positive_rate_difference"] == pytest.approx(0.2)
    assert gaps["equalized_odds_difference"] == pytest.approx(0.3)
    assert gaps["demographic_parity_difference"] == pytest.approx(0.25)
    assert gaps["accuracy_difference"] == pytest.approx(0.75 - 0.7)
    # A: mean p (8*.9 + 2*.2 + 3*.7 + 7*.1)/20 = 0.52, prevalence 0.5; B: 0.355 vs 0.5
    assert a["metrics"]["calibration_in_the_large"] == pytest.approx(0.02)
    assert gaps["calibration_difference"] == pytest.approx(0.02 + 0.145)
    # both groups' scores separate the classes except fp vs fn: A 1 - 2*3/100, B 1 - 5/100
    assert a["metrics"]["auroc"] == pytest.approx(1 - (2 * 3) / 100)
    assert gaps["auroc_difference"] == pytest.approx(0.95 - 0.94)
    assert group["compared"] == ["A", "B"]
    json.dumps(combined, allow_nan=False)


def test_gaps_equal_fairlearn_metricframe_when_installed() -> None:
    metrics = pytest.importorskip("fairlearn.metrics")
    y, p, g = _hand_site()
    rng = np.random.default_rng(9)
    p = np.clip(p + rng.normal(0, 0.2, len(p)), 0, 1)
    table = subgroup_summary("binary", y, p, {"grp": g}, threshold=0.5, bins=10, min_cell=0)
    gaps = combine_subgroups({"s": table}, min_cell=0)["groups"]["grp"]["gaps"]
    yhat = (p >= 0.5).astype(int)
    kw = {"sensitive_features": g}
    assert gaps["equalized_odds_difference"] == pytest.approx(
        metrics.equalized_odds_difference(y, yhat, **kw)
    )
    assert gaps["demographic_parity_difference"] == pytest.approx(
        metrics.demographic_parity_difference(y, yhat, **kw)
    )
    assert gaps["true_positive_rate_difference"] == pytest.approx(
        metrics.equal_opportunity_difference(y, yhat, **kw)
    )


def test_combined_cells_under_min_cell_are_suppressed_again() -> None:
    y, p, g = _rows(8, 2, 3, 7)[0], _rows(8, 2, 3, 7)[1], np.array(["A"] * 20)
    small_y, small_p = np.array([1, 0, 0]), np.array([0.9, 0.1, 0.2])
    tables = {
        "big": subgroup_summary(
            "binary", y, p, {"grp": g}, threshold=0.5, bins=10, min_cell=0, curves=True
        ),
        "small": subgroup_summary(
            "binary", small_y, small_p, {"grp": np.array(["B"] * 3)},
            threshold=0.5, bins=10, min_cell=5,
        ),
        "tiny": subgroup_summary(
            "binary", small_y, small_p, {"grp": np.array(["C"] * 3)},
            threshold=0.5, bins=10, min_cell=0,
        ),
    }  # fmt: skip
    combined = combine_subgroups(tables, min_cell=5)
    levels = combined["groups"]["grp"]["levels"]
    a = levels["A"]
    assert a["n"] == 20 and a["pos"] == 10
    assert a["fn"] is None and a["fp"] is None  # 2 and 3: under min_cell
    assert a["tp"] is None and a["tn"] is None  # else pos - tp gives fn away
    # the bins of the 2 false negatives and 3 false positives are withheld (together: 5)
    assert sorted(v for v in a["curve_n"] if v) == [7, 8] and a["curve_n"].count(None) == 2
    assert a["metrics"]["tpr"] is None and a["metrics"]["fpr"] is None
    assert a["metrics"]["accuracy"] is None
    assert levels["B"] == {"n": None, "suppressed": True, "sites": 0, "sites_suppressed": 1}
    assert levels["C"] == {"n": None, "suppressed": True, "sites": 1, "sites_suppressed": 0}
    assert combined["groups"]["grp"]["gaps"]["equalized_odds_difference"] is None


def test_combine_rejects_sites_that_disagree() -> None:
    y, p, g = _hand_site()
    one = subgroup_summary("binary", y, p, {"grp": g}, threshold=0.5, bins=10, min_cell=0)
    two = subgroup_summary("binary", y, p, {"grp": g}, threshold=0.3, bins=10, min_cell=0)
    with pytest.raises(ValidationError, match="different threshold"):
        combine_subgroups({"a": one, "b": two}, min_cell=0)


def test_multiclass_and_survival_levels_and_their_combination() -> None:
    rng = np.random.default_rng(10)
    y = rng.integers(0, 3, 60)
    prob = rng.dirichlet(np.ones(3), 60)
    prob[np.arange(60), y] += 1.0
    prob /= prob.sum(axis=1, keepdims=True)
    labels = {"sex": np.array(["0", "1"] * 30)}
    table = subgroup_summary(
        "multiclass", y, prob, labels, threshold=0.5, bins=10, min_cell=5,
        features={"sex": "SEX"},
    )  # fmt: skip
    assert table["metric"] == "macro_auroc" and table["groups"]["sex"]["feature"] == "SEX"
    zero = table["groups"]["sex"]["levels"]["0"]
    assert zero["n"] == 30 and 0.5 < zero["value"] <= 1.0
    other = {
        **table,
        "groups": {"sex": {"feature": "SEX", "levels": {"0": {"n": 10, "value": 0.5}}}},
    }
    combined = combine_subgroups({"a": table, "b": other}, min_cell=5)
    level = combined["groups"]["sex"]["levels"]["0"]
    assert level["n"] == 40 and level["value"] == pytest.approx((30 * zero["value"] + 5) / 40)
    gap = combined["groups"]["sex"]["gaps"]["macro_auroc_difference"]
    assert gap == pytest.approx(
        abs(level["value"] - combined["groups"]["sex"]["levels"]["1"]["value"])
    )
    time = rng.exponential(1.0, 60)
    event = rng.integers(0, 2, 60)
    risk = -time + rng.normal(0, 0.1, 60)
    surv = subgroup_summary(
        "survival", event, risk, labels, threshold=0.5, bins=10, min_cell=5, time=time
    )
    assert surv["metric"] == "cindex" and surv["groups"]["sex"]["levels"]["1"]["value"] > 0.8


def test_complementary_suppression_withholds_little_and_combine_uses_what_is_left() -> None:
    # sex "0": fn = 2 is small; pos - tp and the site's fn minus sex "1"'s would give it away
    ya, pa = _rows(7, 2, 7, 18)
    yb, pb = _rows(30, 9, 8, 23)
    y, p = np.concatenate([ya, yb]), np.concatenate([pa, pb])
    sex = np.array(["0"] * len(ya) + ["1"] * len(yb))
    table = subgroup_summary("binary", y, p, {"sex": sex}, threshold=0.5, bins=1, min_cell=5)
    levels = table["groups"]["sex"]["levels"]
    for level, (n, pos, fp, tn) in {"0": (34, 9, 7, 18), "1": (70, 39, 8, 23)}.items():
        cell = levels[level]
        assert (cell["n"], cell["pos"], cell["fp"], cell["tn"]) == (n, pos, fp, tn)
        assert cell["tp"] is None and cell["fn"] is None
    _check_protected(table, _site_totals(y, p, 0.5, 1), 5)
    combined = combine_subgroups({"s": table}, min_cell=5)["groups"]["sex"]
    zero = combined["levels"]["0"]
    assert zero["positive_sites"] == 0 and zero["negative_sites"] == 1
    assert zero["confusion_sites"] is None and zero["metrics"]["accuracy"] is None
    assert zero["metrics"]["tpr"] is None and zero["metrics"]["fpr"] == pytest.approx(7 / 25)
    assert combined["gaps"]["false_positive_rate_difference"] == pytest.approx(7 / 25 - 8 / 31)
    assert combined["gaps"]["equalized_odds_difference"] is None
