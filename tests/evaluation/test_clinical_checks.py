"""summary_problem refuses forged or inconsistent site summaries, naming the field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fedcare.evaluation.clinical import site_summary, summary_problem

SPEC = {"threshold": 0.5, "bins": 10, "curve_bins": 100, "bootstrap": 40, "confidence": 0.95}


def _binary() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    p = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 40), 0, 1)
    summary = site_summary("binary", y, p, spec=SPEC, rng=rng)
    return json.loads(json.dumps(summary, allow_nan=False))


def _multiclass() -> dict[str, Any]:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 30)
    prob = rng.dirichlet(np.ones(3), 30)
    return json.loads(json.dumps(site_summary("multiclass", y, prob, spec=SPEC, rng=rng)))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(s: dict[str, Any]) -> None:
        *head, last = path.split("/")
        target: Any = s
        for key in head:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def _move_one_bin_row(s: dict[str, Any]) -> None:
    s["calibration"]["bins"][0]["n"] += 1


def _shift_curve(s: dict[str, Any]) -> None:
    n = s["curve"]["n"]
    i = next(j for j, v in enumerate(n) if v > 0)
    n[i] -= 1
    n[(i + 50) % len(n)] += 1  # same total, different reliability bin
    s["curve"]["pos"][i] = min(s["curve"]["pos"][i], n[i])


def _too_many_bins(s: dict[str, Any]) -> None:
    s["calibration"]["bins"] = [dict(s["calibration"]["bins"][0]) for _ in range(101)]


def _huge_curve(s: dict[str, Any]) -> None:
    s["curve"] = {"bins": 5000, "n": [0] * 5000, "pos": [0] * 5000}


FORGED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("version", _set("version", 2), "version"),
    ("task", _set("task", "ranking"), "task"),
    ("negative n", _set("n", -1), "n must be >= 0"),
    ("fractional n", _set("n", 40.5), "n must be a whole number"),
    ("n over the rows counted", _set("n", 41), "confusion cells sum to 40, not n = 41"),
    ("negative cell", _set("confusion/tp", -3), "confusion.tp must be >= 0"),
    ("bool count", _set("confusion/fn", True), "confusion.fn must be a whole number"),
    ("bins not summing", _move_one_bin_row, "calibration.bins n sum to"),
    ("pos over n", _set("calibration/bins/9/pos", 10**6), "calibration.bins[9].pos must be <="),
    ("sum_p outside its bin", _set("calibration/bins/9/sum_p", -1.0), "bins[9].sum_p"),
    ("bin edges", _set("calibration/bins/3/hi", 0.45), "calibration.bins[3] edges"),
    ("NaN brier", _set("calibration/brier", float("nan")), "calibration.brier"),
    ("infinite slope", _set("calibration/slope", float("inf")), "calibration.slope"),
    ("negative se", _set("calibration/slope_se", -0.1), "calibration.slope_se must be >= 0"),
    ("prevalence off", _set("prevalence", 0.99), "prevalence"),
    ("prevalence above 1", _set("prevalence", 1.5), "prevalence must be <= 1"),
    ("nir off", _set("no_information_rate", 0.51), "no_information_rate"),
    ("auroc above 1", _set("metrics/auroc/value", 1.2), "metrics.auroc.value must be <= 1"),
    ("string metric", _set("metrics/auroc/value", "0.9"), "metrics.auroc.value must be a finite"),
    ("value outside ci", _set("metrics/accuracy/lo", 0.999), "metrics.accuracy"),
    ("unknown metric", _set("metrics/secret", {"value": 0.1}), "metrics.secret"),
    ("unknown field", _set("rows", [[1, 2]]), "unknown field"),
    ("too many bins", _too_many_bins, "calibration.bins must hold 1 to 100"),
    ("huge curve", _huge_curve, "curve.bins must be <= 1000"),
    ("curve list length", _set("curve/bins", 99), "curve.n must hold 99 to 99"),
    ("curve vs bins", _shift_curve, "curve counts do not merge"),
    ("curve pos over n", _set("curve/pos/0", 10**6), "curve.pos[0]"),
    ("bootstrap huge", _set("bootstrap", 10**7), "bootstrap must be <= 2000"),
    ("threshold", _set("threshold", 7), "threshold must be <= 1"),
    ("metrics not an object", _set("metrics", []), "metrics must be an object"),
]


@pytest.mark.parametrize(("what", "change", "message"), FORGED, ids=[f[0] for f in FORGED])
def test_forged_binary_summaries_are_refused_naming_the_field(
    what: str, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    summary = _binary()
    assert summary_problem(summary) is None
    forged = copy.deepcopy(summary)
    change(forged)
    problem = summary_problem(forged)
    assert problem is not None, what
    assert message in problem
    assert "\n" not in problem and len(problem) < 300


def test_missing_parts_and_non_objects_are_refused() -> None:
    summary = _binary()
    del summary["curve"]
    assert summary_problem(summary) == "missing field(s) ['curve']"
    assert summary_problem([1, 2]) is not None  # type: ignore[arg-type]


def test_multiclass_matrix_is_checked() -> None:
    summary = _multiclass()
    assert summary_problem(summary) is None
    bad = copy.deepcopy(summary)
    bad["confusion"]["matrix"][0].append(1)
    assert "confusion.matrix[0] must hold 3 to 3" in (summary_problem(bad) or "")
    bad = copy.deepcopy(summary)
    bad["confusion"]["matrix"][1][1] += 5
    assert "confusion.matrix sums to 35, not n = 30" in (summary_problem(bad) or "")
    bad = copy.deepcopy(summary)
    bad["prevalence"] = [1.0, 0.0, 0.0]
    assert "prevalence[0]" in (summary_problem(bad) or "")


def test_subgroup_and_other_parts_may_travel_with_the_summary() -> None:
    summary = _binary()
    summary["subgroups"] = {"groups": {}}
    summary["importance"] = {"metric": "auroc"}
    assert summary_problem(summary) is None
