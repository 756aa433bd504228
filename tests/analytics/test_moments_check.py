"""Plausibility of one site's feature moments: consistency, then robust outliers."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.analytics.moments import feature_moments
from fedcare.analytics.moments_check import (
    MAX_MEAN_DISTANCE,
    MAX_SD_RATIO,
    moments_problem,
    outlying_sites,
)
from fedcare.data.base import FederatedDataset
from fedcare.data.registry import load_dataset
from fedcare.records.arrays import ArrayRecord
from tests.conftest import require_mirror


def _parts(ds: FederatedDataset) -> dict[str, ArrayRecord]:
    return {s.site_id: feature_moments(np.asarray(s.train.X, np.float64)) for s in ds.sites}


def _honest() -> ArrayRecord:
    X = np.random.default_rng(0).normal(size=(40, 3))
    X[0, 1] = np.nan  # a missing value: that feature's count is 39
    return feature_moments(X)


def _edit(part: ArrayRecord, **arrays: object) -> ArrayRecord:
    return ArrayRecord({**dict(part.items()), **arrays})


def test_consistent_moments_pass() -> None:
    assert moments_problem("a", _honest(), width=3, max_rows=40) is None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"count": np.array([40.0, 39.0])}, "shapes"),
        ({"count": np.array([40, 39, 40])}, "dtypes"),
        ({"sum": np.array([np.nan, 0.0, 0.0])}, "NaN or infinite"),
        ({"count": np.array([41.0, 39.0, 40.0])}, "from 0 to the 40 rows"),
        ({"count": np.array([-1.0, 39.0, 40.0])}, "from 0 to the 40 rows"),
        ({"count": np.array([39.5, 39.0, 40.0])}, "whole numbers"),
        ({"sumsq": np.array([0.0, 0.0, 0.0])}, "negative variance"),
        ({"suppressed": np.array([1.0, 0.0, 0.0])}, "suppressed"),
    ],
)
def test_inconsistent_moments_are_named(change: dict[str, object], why: str) -> None:
    part = _edit(_honest(), **change)
    reason = moments_problem("bad", part, width=3, max_rows=40)
    assert reason is not None and why in reason and "'bad'" in reason


def test_missing_or_extra_arrays_are_named() -> None:
    part = ArrayRecord({k: v for k, v in _honest().items() if k != "sumsq"})
    assert "expected ['count', 'sum', 'sumsq', 'suppressed']" in str(
        moments_problem("bad", part, width=3, max_rows=40)
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [("heart-disease", {"protocol": "raw"}), ("tcga-brca", {}), ("eicu", {}), ("synthetic", {})],
)
def test_honest_sites_of_the_built_in_datasets_are_accepted(
    name: str, options: dict[str, str]
) -> None:
    require_mirror()
    ds = load_dataset(name, **options)
    parts = _parts(ds)
    for site in ds.sites:
        assert (
            moments_problem(
                site.site_id,
                parts[site.site_id],
                width=ds.sites[0].train.X.shape[1],
                max_rows=len(site.train),
            )
            is None
        )
    assert outlying_sites(parts) == {}


def _poisoned(part: ArrayRecord, shift: float, feature: int = 0) -> ArrayRecord:
    """``part`` as if every value of ``feature`` were ``shift`` larger: consistent sums."""
    count, total, sumsq = part["count"], part["sum"].copy(), part["sumsq"].copy()
    j = feature
    sumsq[j] = sumsq[j] + 2 * shift * total[j] + count[j] * shift**2
    total[j] = total[j] + count[j] * shift
    return _edit(part, sum=total, sumsq=sumsq)


def test_a_poisoned_hospital_is_named_and_the_others_kept(heart: FederatedDataset) -> None:
    parts = _parts(heart)
    sd = float(
        np.sqrt(
            parts["cleveland"]["sumsq"][0] / parts["cleveland"]["count"][0]
            - (parts["cleveland"]["sum"][0] / parts["cleveland"]["count"][0]) ** 2
        )
    )
    parts["va"] = _poisoned(parts["va"], 100 * sd)  # age shifted by ~900 years: consistent sums
    assert moments_problem("va", parts["va"], width=13, max_rows=85) is None  # looks valid
    out = outlying_sites(parts)
    assert list(out) == ["va"] and f"at most {MAX_MEAN_DISTANCE:g}" in out["va"]


def test_one_poisoner_among_three_does_not_drag_an_honest_site_out(
    heart: FederatedDataset,
) -> None:
    parts = {k: v for k, v in _parts(heart).items() if k != "switzerland"}
    parts["va"] = _poisoned(parts["va"], 1e4)
    assert list(outlying_sites(parts)) == ["va"]


def test_an_inflated_spread_is_named(heart: FederatedDataset) -> None:
    parts = _parts(heart)
    hungary = parts["hungary"]
    parts["hungary"] = _edit(hungary, sumsq=hungary["sumsq"] * np.where(np.arange(13) == 3, 1e6, 1))
    out = outlying_sites(parts)
    assert list(out) == ["hungary"] and f"at most {MAX_SD_RATIO:g}" in out["hungary"]


def test_two_sites_have_no_others_to_compare_with(heart: FederatedDataset) -> None:
    parts = {k: v for k, v in _parts(heart).items() if k in ("cleveland", "va")}
    parts["va"] = _poisoned(parts["va"], 1e4)
    assert outlying_sites(parts) == {}
