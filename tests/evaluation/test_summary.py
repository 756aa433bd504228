"""Site aggregates, the cross-site matrix and the EXAM summary, checked by hand."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from fedcare.errors import ValidationError
from fedcare.evaluation.summary import cross_site_matrix, exam_summary, summarize_sites

NAN = float("nan")


def test_summarize_sites_by_hand() -> None:
    per_site = {
        "a": {"accuracy": 0.8, "auroc": 0.9, "n": 100},
        "b": {"accuracy": 0.6, "auroc": NAN, "n": 50},  # one class: AUROC undefined
        "c": {"accuracy": 0.7, "auroc": 0.7, "n": 50},
    }
    before = json.dumps(per_site)
    out = summarize_sites(per_site)
    assert out["weighted"]["accuracy"] == pytest.approx((80 + 30 + 35) / 200)
    assert out["unweighted"]["accuracy"] == pytest.approx(0.7)
    assert out["weighted"]["auroc"] == pytest.approx((90 + 35) / 150)
    assert out["unweighted"]["auroc"] == pytest.approx(0.8)
    assert out["weighted"]["n"] == 200 and out["unweighted"]["n"] == 200
    assert out["skipped"] == {"accuracy": 0, "auroc": 1}
    assert list(out["weighted"]) == ["accuracy", "auroc", "n"]
    assert json.dumps(per_site) == before


def test_summarize_sites_all_nan_or_missing_metric() -> None:
    out = summarize_sites({"a": {"auroc": NAN, "n": 10}, "b": {"n": 5, "loss": 0.5}})
    assert math.isnan(out["weighted"]["auroc"]) and math.isnan(out["unweighted"]["auroc"])
    assert out["skipped"] == {"auroc": 2, "loss": 1}
    assert out["weighted"]["loss"] == 0.5


def test_summarize_sites_reads_none_as_nan() -> None:
    out = summarize_sites({"a": {"auroc": None, "n": 10}, "b": {"auroc": 0.5, "n": 5}})
    assert out["weighted"]["auroc"] == 0.5 and out["skipped"] == {"auroc": 1}


def test_summarize_sites_zero_rows_gives_nan_weighted_mean() -> None:
    out = summarize_sites({"a": {"accuracy": 0.5, "n": 0}})
    assert math.isnan(out["weighted"]["accuracy"]) and out["unweighted"]["accuracy"] == 0.5


@pytest.mark.parametrize(
    "per_site",
    [{"a": {"accuracy": 0.5}}, {"a": {"accuracy": 0.5, "n": -1}}, {"a": {"accuracy": "x", "n": 1}}],
)
def test_summarize_sites_rejects_bad_input(per_site: Any) -> None:
    with pytest.raises(ValidationError, match="'a'"):
        summarize_sites(per_site)


def _toy_evaluate(model: float, site: str) -> dict[str, float]:
    return {"accuracy": model + {"x": 0.0, "y": 0.1}[site], "n": 10}


def test_cross_site_matrix_rows_models_cols_sites() -> None:
    out = cross_site_matrix(
        {"federated": 0.5, "local-x": 0.3}, ["x", "y"], _toy_evaluate, "accuracy"
    )
    assert out["metric"] == "accuracy"
    assert out["models"] == ["federated", "local-x"] and out["sites"] == ["x", "y"]
    assert out["matrix"] == [[0.5, pytest.approx(0.6)], [0.3, pytest.approx(0.4)]]
    assert out["cells"]["local-x"]["y"] == {"accuracy": pytest.approx(0.4), "n": 10.0}
    json.dumps(out)


def test_cross_site_matrix_missing_cell_is_nan_but_unknown_metric_is_an_error() -> None:
    def evaluate(model: float, site: str) -> dict[str, float]:
        return {} if site == "y" else _toy_evaluate(model, site)

    out = cross_site_matrix({"federated": 0.5}, ["x", "y"], evaluate, "accuracy")
    assert out["matrix"][0][0] == 0.5 and math.isnan(out["matrix"][0][1])
    with pytest.raises(ValidationError, match="'auroc'"):
        cross_site_matrix({"federated": 0.5}, ["x"], _toy_evaluate, "auroc")
    with pytest.raises(ValidationError, match=r"'federated' on site 'x'.*'accuracy'"):
        cross_site_matrix({"federated": "x"}, ["x"], lambda m, s: {"accuracy": m}, "accuracy")  # type: ignore[dict-item]


SITES = ["a", "b", "c"]
MATRIX = {
    "federated": [0.80, 0.70, 0.90],
    "local-a": [0.75, 0.50, 0.60],
    "local-b": [0.40, 0.60, 0.50],
    "local-c": [0.70, 0.65, 0.90],
    "pooled": [0.85, 0.75, 0.90],
}


def _cross(matrix: dict[str, list[float | None]]) -> dict[str, Any]:
    return {
        "metric": "auroc",
        "models": list(matrix),
        "sites": SITES,
        "matrix": list(matrix.values()),
    }


def test_exam_summary_by_hand() -> None:
    cross = _cross(dict(MATRIX))  # type: ignore[arg-type]
    before = json.dumps(cross)
    out = exam_summary(cross)
    assert json.dumps(cross) == before
    json.dumps(out)
    assert out["metric"] == "auroc" and out["sites"] == SITES

    own = out["own_site"]
    # a: 0.80 - 0.75 = 0.05 (0.05/0.75); b: 0.70 - 0.60 = 0.10 (0.10/0.60); c: 0.90 - 0.90 = 0
    assert own["per_site"]["a"] == pytest.approx(
        {"local": 0.75, "federated": 0.80, "absolute": 0.05, "relative": 0.05 / 0.75}
    )
    assert own["per_site"]["b"]["relative"] == pytest.approx(0.10 / 0.60)
    assert own["absolute"] == pytest.approx(0.15 / 3)
    assert own["relative"] == pytest.approx((0.05 / 0.75 + 0.10 / 0.60 + 0.0) / 3)
    assert own["local"] == pytest.approx(0.75) and own["federated"] == pytest.approx(0.80)
    assert own["n_sites"] == 3

    gen = out["generalizability"]
    # local-a on b, c: 0.55 (federated 0.80); local-b on a, c: 0.45 (0.85);
    # local-c on a, b: 0.675 (0.75)
    assert gen["per_site"]["a"] == pytest.approx(
        {"local_on_others": 0.55, "federated_on_others": 0.80, "n_other_sites": 2}
    )
    assert gen["per_site"]["b"]["local_on_others"] == pytest.approx(0.45)
    assert gen["per_site"]["c"]["federated_on_others"] == pytest.approx(0.75)
    local = (0.55 + 0.45 + 0.675) / 3
    assert gen["local"] == pytest.approx(local)
    assert gen["federated_all_sites"] == pytest.approx(0.80)
    assert gen["federated_like_for_like"] == pytest.approx((0.80 + 0.85 + 0.75) / 3)
    assert gen["absolute"] == pytest.approx(0.80 - local)
    assert gen["relative"] == pytest.approx((0.80 - local) / local)
    assert gen["absolute_like_for_like"] == pytest.approx(0.80 - local)
    assert out["pooled"] == {"mean_all_sites": pytest.approx((0.85 + 0.75 + 0.90) / 3)}


def test_exam_summary_leaves_out_undefined_cells() -> None:
    matrix: dict[str, list[float | None]] = {k: list(v) for k, v in MATRIX.items()}
    matrix["local-b"][2] = NAN  # local-b undefined on c
    matrix["federated"][1] = None  # federated undefined on b (None reads NaN)
    out = exam_summary(_cross(matrix))
    own = out["own_site"]
    assert math.isnan(own["per_site"]["b"]["absolute"]) and own["n_sites"] == 2
    assert own["absolute"] == pytest.approx((0.05 + 0.0) / 2)
    gen = out["generalizability"]
    # Pairs kept: local-a on c only (b is NaN for federated); local-b on a only; local-c on a.
    assert gen["per_site"]["a"] == pytest.approx(
        {"local_on_others": 0.60, "federated_on_others": 0.90, "n_other_sites": 1}
    )
    assert gen["per_site"]["b"]["local_on_others"] == pytest.approx(0.40)
    assert gen["per_site"]["c"]["local_on_others"] == pytest.approx(0.70)
    assert gen["local"] == pytest.approx((0.60 + 0.40 + 0.70) / 3)
    assert gen["federated_like_for_like"] == pytest.approx((0.90 + 0.80 + 0.80) / 3)
    assert gen["federated_all_sites"] == pytest.approx((0.80 + 0.90) / 2)


def test_exam_summary_only_sites_with_a_local_model() -> None:
    matrix = {k: v for k, v in MATRIX.items() if k in ("federated", "local-a")}
    out = exam_summary(_cross(matrix))  # type: ignore[arg-type]
    assert out["sites"] == ["a"] and "pooled" not in out
    assert out["generalizability"]["local"] == pytest.approx(0.55)


@pytest.mark.parametrize(
    ("cross", "message"),
    [
        (_cross({"local-a": [0.1, 0.2, 0.3]}), "no 'federated'"),
        (_cross({"federated": [0.1, 0.2, 0.3], "pooled": [0.1, 0.2, 0.3]}), "no local model"),
        (_cross({"federated": [0.1, 0.2]}), "3 x 3|1 x 3"),
        ({"models": ["federated"]}, "needs"),
    ],
)
def test_exam_summary_rejects_bad_input(cross: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        exam_summary(cross)


def test_exam_summary_of_a_deep_copy_is_identical() -> None:
    cross = _cross(dict(MATRIX))  # type: ignore[arg-type]
    assert exam_summary(copy.deepcopy(cross)) == exam_summary(cross)


def test_site_metrics_problem_names_what_cannot_be_summarized() -> None:
    from fedcare.evaluation.summary import site_metrics_problem

    assert site_metrics_problem("a", {"accuracy": 0.8, "auroc": None, "n": 10.0}) is None
    assert "without 'n'" in str(site_metrics_problem("a", {"accuracy": 0.8}))
    assert "'n' = -1" in str(site_metrics_problem("a", {"n": -1}))
    assert "'n' = 2.5" in str(site_metrics_problem("a", {"n": 2.5}))
    assert "'n' = inf" in str(site_metrics_problem("a", {"n": float("inf")}))
    assert "not a number" in str(site_metrics_problem("a", {"n": 3, "x": "y"}))
    assert "more than the 9 test rows" in str(site_metrics_problem("a", {"n": 10}, max_rows=9))
