"""The repeated-split benchmark's statistics and tables (``benchmarks/repeated_stats.py``,
``benchmarks/tables_repeated.py``): t-intervals, pairing by split, the README cells."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from repeated_stats import difference_row, interval, row, split_means
from tables_repeated import repeated

T_975_3 = 3.182446305284263  # Student's t, 97.5% quantile, 3 degrees of freedom


def test_interval_is_the_t_interval_over_finite_values() -> None:
    values = [0.80, 0.82, 0.79, 0.81, math.nan]
    mean, sd, lo, hi = interval(values)
    assert mean == pytest.approx(0.805, abs=1e-12)
    assert sd == pytest.approx(0.0129099444873581, abs=1e-12)  # ddof=1
    half = T_975_3 * sd / 2.0
    assert (lo, hi) == (pytest.approx(0.805 - half, abs=1e-12), pytest.approx(0.805 + half))
    assert hi - lo == pytest.approx(0.041086, abs=1e-6)


def test_interval_of_one_or_no_value_has_no_width() -> None:
    mean, sd, lo, hi = interval([0.7, math.nan])
    assert (mean, sd) == (0.7, 0.0) and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in interval([math.nan]))
    empty = row("d", "m", "auroc", [math.nan], "auroc", "")
    assert (empty["mean"], empty["lo"], empty["hi"], empty["n"]) == (None, None, None, 0)


def _run(scores: dict[str, list[float]]) -> dict[str, Any]:
    return {"scores": {m: [{"auroc": v} for v in vs] for m, vs in scores.items()}}


def test_differences_are_paired_within_splits() -> None:
    # Both methods move with the split; a is 0.25 above b in each: the paired interval is exact.
    runs = [
        _run({"a": [0.5, 0.5], "b": [0.25, 0.25]}),
        _run({"a": [0.75, 1.0], "b": [0.5, 0.75]}),
        _run({"a": [1.0, math.nan], "b": [0.75, 0.75]}),  # a NaN seed is left out of the mean
    ]
    assert split_means(runs, "a", "auroc") == [0.5, 0.875, 1.0]
    r = difference_row("d", runs, "a", "b", "auroc")
    assert r["method"] == "a - b" and r["n"] == 3
    assert (r["mean"], r["sd"], r["lo"], r["hi"]) == (0.25, 0.0, 0.25, 0.25)
    assert "|difference| <= 0.01 in 0 of 3 splits" in r["notes"]
    assert "> 0 in 3" in r["notes"]
    unpaired = interval(split_means(runs, "a", "auroc"))
    assert unpaired[3] - unpaired[2] > 0.5  # what ignoring the pairing would report


def _row(method: str, metric: str, mean: float, notes: str = "") -> dict[str, Any]:
    lo, hi = mean - 0.01, mean + 0.01
    base = "mean over 10 splits of the mean over 2 seeds; 95% t-interval"
    return {"dataset": "eicu", "method": method, "metric": metric, "mean": mean, "sd": 0.02,
            "n": 10, "lo": lo, "hi": hi, "notes": f"{base}{notes}"}  # fmt: skip


def test_tables_put_fixed_settings_and_the_single_split_beside_the_interval() -> None:
    alone = "; quality.py's split (seed 0) alone (not in the interval): 0.8183"
    rows = [
        _row("fedavg", "auroc", 0.79, alone),
        _row("pooled", "auroc", 0.80, alone),
        _row("pooled-quality-settings", "auroc", 0.78, alone),
        _row("fedavg - pooled", "auroc", -0.01, "; |difference| <= 0.01 in 6 of 10 splits"),
    ]
    text = "\n".join(repeated(rows))
    assert "| method | auroc | auroc, quality.py's settings | auroc on quality.py's split " in text
    assert "| fedavg | 0.790 [0.780, 0.800] |  | 0.818 |" in text
    assert "| pooled | 0.800 [0.790, 0.810] | 0.780 [0.770, 0.790] | 0.818 |" in text
    assert "| fedavg - pooled | -0.010 [-0.020, 0.000] | 6 of 10 |" in text
    assert "pooled-quality-settings |" not in text  # a column, not a row of its own


def test_split_seeds_skip_the_reference_split_and_lowest_skips_nan() -> None:
    from repeated import SPECS
    from repeated_protocol import _lowest

    assert SPECS["eicu"].split_seeds(3) == [1, 2, 3]  # seed 0 is quality.py's split
    assert SPECS["tcga-brca"].split_seeds(3) == [0, 1, 2]  # FLamby's split is None
    assert SPECS["heart-disease"].split_seeds(45)[42:] == [42, 44, 45]  # 43 is FLamby's
    assert _lowest([math.nan, 0.5, 0.4, 0.4]) == 2  # the first of equal losses
    assert _lowest([math.nan, math.nan]) is None  # no finite loss: keep quality.py's setting


def test_local_mean_averages_the_tuned_local_models_per_seed() -> None:
    from repeated import SPECS
    from repeated_protocol import _with_local_mean

    def seeds(*values: float) -> list[dict[str, float]]:
        return [{"cindex": v} for v in values]

    run = {
        "seeds": [0, 1],
        "scores": {
            "fedavg": seeds(0.8, 0.8),
            "local-region-0": seeds(0.5, 0.75),
            "local-region-1": seeds(0.75, math.nan),
            "local-region-1-quality-settings": seeds(0.0, 0.0),  # not a tuned local model
        },
    }
    out = _with_local_mean(SPECS["tcga-brca"], run)
    assert out["scores"]["local-mean"] == [{"cindex": 0.625}, {"cindex": 0.75}]
    assert "local-mean" not in run["scores"]  # the stored run is left alone
