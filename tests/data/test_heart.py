"""UCI Heart Disease with FLamby's Fed-Heart-Disease protocol."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from fedcare.data.base import FederatedDataset, SiteData
from fedcare.data.heart import HEART_FEATURES, load_heart_disease
from fedcare.errors import ConfigError

# FLamby's README: "Records per center | Train/Test: 199/104, 172/89, 30/16, 85/45".
FLAMBY_SIZES = {
    "cleveland": (199, 104),
    "hungary": (172, 89),
    "switzerland": (30, 16),
    "va": (85, 45),
}
# Positives (num > 0) among FLamby's rows, per split; pins the stratified split.
POSITIVES = {"cleveland": (91, 48), "hungary": (65, 33), "switzerland": (30, 15), "va": (66, 35)}
# Sum of ages of each centre's test rows: a fingerprint of which rows the split chose (checked
# against an independent re-run of FLamby's pandas/sklearn steps; guards sklearn changes).
TEST_AGE_SUMS = {"cleveland": 5714.0, "hungary": 4298.0, "switzerland": 895.0, "va": 2650.0}


@pytest.fixture(scope="module")
def flamby(load_from_mirror: Callable[..., FederatedDataset]) -> FederatedDataset:
    return load_from_mirror(load_heart_disease, protocol="flamby")


@pytest.fixture(scope="module")
def raw(load_from_mirror: Callable[..., FederatedDataset]) -> FederatedDataset:
    return load_from_mirror(load_heart_disease, protocol="raw")


def test_sites_and_sizes_equal_flamby(flamby: FederatedDataset) -> None:
    assert flamby.site_ids == ["cleveland", "hungary", "switzerland", "va"]
    sizes = {s.site_id: (len(s.train), len(s.test)) for s in flamby.sites}
    assert sizes == FLAMBY_SIZES
    assert sum(a + b for a, b in sizes.values()) == 740
    positives = {s.site_id: (int(s.train.y.sum()), int(s.test.y.sum())) for s in flamby.sites}
    assert positives == POSITIVES


def test_split_fingerprint(raw: FederatedDataset) -> None:
    age = HEART_FEATURES.index("age")
    sums = {s.site_id: float(s.test.X[:, age].sum()) for s in raw.sites}
    assert sums == TEST_AGE_SUMS


def test_metadata(flamby: FederatedDataset) -> None:
    assert flamby.task == "binary"
    assert flamby.metrics == ("accuracy", "auroc")
    assert len(flamby.feature_names) == 13
    assert flamby.feature_names[:8] == (
        "age",
        "sex",
        "trestbps",
        "chol",
        "fbs",
        "thalach",
        "exang",
        "oldpeak",
    )
    assert "CC BY 4.0" in flamby.license
    assert "Janosi" in flamby.citation
    assert "199/104" in flamby.description


def test_flamby_standardises_with_each_centres_train_statistics(flamby: FederatedDataset) -> None:
    for s in flamby.sites:
        assert s.train.X.shape[1] == 13
        assert not np.isnan(s.train.X).any() and not np.isnan(s.test.X).any()
        np.testing.assert_allclose(s.train.X.mean(axis=0), 0.0, atol=1e-9)
        std = s.train.X.std(axis=0, ddof=1)
        constant = std < 1e-6
        np.testing.assert_allclose(std[~constant], 1.0, atol=1e-6)
        # Only columns constant in the centre's train rows are exactly zero (FLamby's eps).
        assert np.all(s.train.X[:, constant] == 0.0)
    chol = HEART_FEATURES.index("chol")
    assert np.all(flamby.site("switzerland").train.X[:, chol] == 0.0)


def test_raw_is_the_same_rows_unscaled(flamby: FederatedDataset, raw: FederatedDataset) -> None:
    for f, r in zip(flamby.sites, raw.sites, strict=True):
        np.testing.assert_array_equal(f.train.y, r.train.y)
        np.testing.assert_array_equal(f.test.y, r.test.y)
        train = np.nan_to_num(r.train.X, nan=0.0)  # FLamby keeps the 0 missing codes
        test = np.nan_to_num(r.test.X, nan=0.0)
        mean, std = train.mean(axis=0), train.std(axis=0, ddof=1) + 1e-9
        np.testing.assert_allclose(f.train.X, (train - mean) / std, atol=1e-9)
        np.testing.assert_allclose(f.test.X, (test - mean) / std, atol=1e-9)


def test_raw_marks_missing_codes(raw: FederatedDataset) -> None:
    chol = HEART_FEATURES.index("chol")
    bps = HEART_FEATURES.index("trestbps")
    swiss = raw.site("switzerland")
    assert np.isnan(swiss.train.X[:, chol]).all() and np.isnan(swiss.test.X[:, chol]).all()
    everything = np.concatenate([raw.pooled().train.X, raw.pooled().test.X])
    assert np.nanmin(everything[:, chol]) > 0 and np.nanmin(everything[:, bps]) > 0
    va_chol = np.concatenate([raw.site("va").train.X[:, chol], raw.site("va").test.X[:, chol]])
    assert int(np.isnan(va_chol).sum()) == 33
    assert np.isnan(raw.site("cleveland").train.X).sum() == 0
    ages = raw.pooled().train.X[:, HEART_FEATURES.index("age")]
    assert ages.min() >= 25 and ages.max() <= 80


def test_one_hot_columns(raw: FederatedDataset) -> None:
    X = np.concatenate([raw.pooled().train.X, raw.pooled().test.X])
    cp = X[:, [HEART_FEATURES.index(f"cp_{k}") for k in (2, 3, 4)]]
    restecg = X[:, [HEART_FEATURES.index(f"restecg_{k}") for k in (1, 2)]]
    assert set(np.unique(cp)) == {0.0, 1.0} and cp.sum(axis=1).max() == 1
    assert restecg.sum(axis=1).max() == 1


def test_loading_twice_gives_the_same_arrays(
    flamby: FederatedDataset, load_from_mirror: Callable[..., FederatedDataset]
) -> None:
    again = load_from_mirror(load_heart_disease)
    for a, b in zip(flamby.sites, again.sites, strict=True):
        np.testing.assert_array_equal(a.train.X, b.train.X)
        np.testing.assert_array_equal(a.test.y, b.test.y)


def test_unknown_protocol_is_named() -> None:
    with pytest.raises(ConfigError, match="'fedavg'"):
        load_heart_disease(protocol="fedavg")  # type: ignore[arg-type]


def test_severity_target_is_num_on_the_same_rows_and_split(
    flamby: FederatedDataset, load_from_mirror: Callable[..., FederatedDataset]
) -> None:
    severity = load_from_mirror(load_heart_disease, target="severity")
    assert (severity.name, severity.task) == ("heart-disease-severity", "multiclass")
    assert severity.primary_metric == "macro_auroc" and severity.extra["num_classes"] == 5
    counts = {}
    for s, b in zip(severity.sites, flamby.sites, strict=True):
        np.testing.assert_array_equal(s.train.X, b.train.X)
        np.testing.assert_array_equal(s.train.y > 0, b.train.y)
        np.testing.assert_array_equal(s.test.y > 0, b.test.y)
        assert s.train.y.dtype == np.int64
        counts[s.site_id] = np.bincount(s.train.y, minlength=5).tolist()
    # Hungary records num as 0/1 only; Switzerland's train rows have no class 0.
    assert counts == {
        "cleveland": [108, 36, 25, 24, 6],
        "hungary": [107, 65, 0, 0, 0],
        "switzerland": [0, 9, 9, 10, 2],
        "va": [19, 23, 20, 18, 5],
    }
    with pytest.raises(ConfigError, match="target must be 'disease' or 'severity', got 'grade'"):
        load_heart_disease(target="grade")  # type: ignore[arg-type]


def test_split_seed_43_is_flambys_split(
    raw: FederatedDataset, load_from_mirror: Callable[..., FederatedDataset]
) -> None:
    again = load_from_mirror(load_heart_disease, protocol="raw", split_seed=43)
    assert again.extra["split_seed"] == 43
    assert again.description == raw.description
    for a, b in zip(raw.sites, again.sites, strict=True):
        np.testing.assert_array_equal(a.train.X, b.train.X)
        np.testing.assert_array_equal(a.test.X, b.test.X)
        np.testing.assert_array_equal(a.test.y, b.test.y)


def _sorted_rows(site: SiteData) -> np.ndarray:
    """All of a site's rows with their labels (missing as -1), in lexicographic order."""
    X = np.concatenate([site.train.X, site.test.X])
    y = np.concatenate([site.train.y, site.test.y])
    rows = np.nan_to_num(np.column_stack([X, y]), nan=-1.0)
    return rows[np.lexsort(rows.T)]


def test_another_split_seed_is_another_stratified_split_of_the_same_rows(
    raw: FederatedDataset, load_from_mirror: Callable[..., FederatedDataset]
) -> None:
    other = load_from_mirror(load_heart_disease, protocol="raw", split_seed=7)
    assert other.extra["split_seed"] == 7
    assert "random_state=7" in other.description
    age = HEART_FEATURES.index("age")
    for a, b in zip(raw.sites, other.sites, strict=True):
        assert (len(b.train), len(b.test)) == FLAMBY_SIZES[a.site_id]
        np.testing.assert_array_equal(_sorted_rows(a), _sorted_rows(b))  # the same rows
        assert float(b.test.X[:, age].sum()) != TEST_AGE_SUMS[a.site_id]  # divided otherwise
    # Stratified on the label: the same positives per split where FLamby stratifies.
    positives = {s.site_id: (int(s.train.y.sum()), int(s.test.y.sum())) for s in other.sites}
    for site in ("cleveland", "hungary", "va"):
        assert positives[site] == POSITIVES[site]


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, True, "43"])
def test_bad_split_seed_is_named(bad: object) -> None:
    with pytest.raises(ConfigError, match="split_seed must be"):
        load_heart_disease(split_seed=bad)  # type: ignore[arg-type]
