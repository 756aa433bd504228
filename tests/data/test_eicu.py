"""eICU-CRD Demo in-hospital mortality by hospital and by region."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from fedcare.data.base import FederatedDataset
from fedcare.data.eicu import EICU_FEATURES, _grouped_split, load_eicu
from fedcare.errors import ConfigError

# From patient.csv (mirror README: 11 hospitals with >= 20 stays, 276 stays): labelled stays
# and deaths of each; 2 stays of hospital 167 have no discharge status.
HOSPITALS = {
    123: (30, 2), 146: (40, 2), 154: (23, 1), 155: (24, 2), 157: (25, 7), 165: (21, 0),
    167: (22, 0), 171: (25, 3), 243: (22, 1), 310: (22, 2), 328: (20, 1),
}  # fmt: skip
REGIONS = {"midwest": (792, 58), "northeast": (157, 19), "south": (733, 63), "west": (601, 50)}
LEAKY = ("mortality", "died", "discharge", "los", "expired", "alive", "ventdays", "predicted")

Load = Callable[..., FederatedDataset]


@pytest.fixture(scope="module")
def by_hospital(load_from_mirror: Load) -> FederatedDataset:
    return load_from_mirror(load_eicu)


@pytest.fixture(scope="module")
def by_region(load_from_mirror: Load) -> FederatedDataset:
    return load_from_mirror(load_eicu, split="region")


def totals(ds: FederatedDataset) -> dict[str, tuple[int, int]]:
    return {
        s.site_id: (len(s.train) + len(s.test), int(s.train.y.sum() + s.test.y.sum()))
        for s in ds.sites
    }


def test_hospital_sites_and_counts(by_hospital: FederatedDataset) -> None:
    assert totals(by_hospital) == {f"hospital-{h}": c for h, c in HOSPITALS.items()}
    assert by_hospital.extra["dropped_unknown_outcome"] == 28


def test_region_sites_and_counts(by_region: FederatedDataset) -> None:
    assert totals(by_region) == {f"region-{r}": c for r, c in REGIONS.items()}
    # 2,492 labelled stays (212 deaths), less 209 in hospitals with no region.
    assert sum(n for n, _ in REGIONS.values()) == 2492 - 209
    assert by_region.extra["dropped_unknown_region"] == 209


def test_deaths_stay_in_train_and_single_class_tests_are_reported(
    by_hospital: FederatedDataset, by_region: FederatedDataset
) -> None:
    for ds in (by_hospital, by_region):
        for s in ds.sites:
            if s.train.y.sum() + s.test.y.sum() > 0:
                assert s.train.y.sum() >= 1, s.site_id
        single = [s.site_id for s in ds.sites if len(np.unique(s.test.y)) < 2]
        assert ds.extra["single_class_test_sites"] == single
        for site_id in single:
            assert f"{site_id}:" in ds.description
    assert by_region.extra["single_class_test_sites"] == []


def test_test_fraction_is_about_three_tenths(by_region: FederatedDataset) -> None:
    for s in by_region.sites:
        assert 0.2 < len(s.test) / (len(s.train) + len(s.test)) < 0.4


def test_features_leak_nothing_and_missing_stays_nan(by_region: FederatedDataset) -> None:
    assert by_region.feature_names == EICU_FEATURES and len(EICU_FEATURES) == 37
    assert not [f for f in EICU_FEATURES if any(word in f for word in LEAKY)]
    X = by_region.pooled().train.X
    assert not np.any(X == -1), "-1 codes are NaN"
    assert np.isnan(X).any()
    age = X[:, EICU_FEATURES.index("age")]
    assert np.nanmax(age) == 90 and np.nanmin(age) >= 0


def test_split_is_seeded(by_hospital: FederatedDataset, load_from_mirror: Load) -> None:
    same = load_from_mirror(load_eicu, seed=0)
    other = load_from_mirror(load_eicu, seed=1)
    for a, b in zip(by_hospital.sites, same.sites, strict=True):
        np.testing.assert_array_equal(a.test.X, b.test.X)
    assert any(
        a.test.X.shape != c.test.X.shape or not np.array_equal(a.test.X, c.test.X, equal_nan=True)
        for a, c in zip(by_hospital.sites, other.sites, strict=True)
    )


def test_default_hospital_split_is_the_one_the_benchmarks_quote(
    by_hospital: FederatedDataset,
) -> None:
    # quality.py's @hospital figures and repeated.py's reference split (seed 0) are this split:
    # (test stays, deaths among them) per hospital, pinned.
    assert {s.site_id: (len(s.test), int(s.test.y.sum())) for s in by_hospital.sites} == {
        "hospital-123": (4, 1), "hospital-146": (3, 0), "hospital-154": (7, 0),
        "hospital-155": (6, 0), "hospital-157": (6, 3), "hospital-165": (8, 0),
        "hospital-167": (5, 0), "hospital-171": (7, 0), "hospital-243": (4, 0),
        "hospital-310": (4, 0), "hospital-328": (8, 0),
    }  # fmt: skip
    assert by_hospital.extra["seed"] == 0


def test_min_stays_selects_hospitals(load_from_mirror: Load) -> None:
    assert len(load_from_mirror(load_eicu, min_stays=25).sites) == 4
    with pytest.raises(ConfigError, match="min_stays=41"):
        load_from_mirror(load_eicu, min_stays=41)


def test_grouped_split_keeps_patients_whole_and_one_death_in_train() -> None:
    groups = np.array(["a", "a", "b", "b", "c", "d", "e", "f", "g", "h"])
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    for seed in range(20):
        train, test = _grouped_split(labels, groups, 0.3, np.random.default_rng(seed))
        assert not set(groups[train]) & set(groups[test])
        assert labels[train].sum() == 2  # the only dying patient trains
        np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(10))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"split": "ward"}, "'ward'"),
        ({"min_stays": 0}, "min_stays"),
        ({"seed": -1}, "seed"),
        ({"test_fraction": 1.0}, "test_fraction"),
    ],
)
def test_invalid_options_are_named(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_eicu(**options)  # type: ignore[arg-type]


def test_metadata(by_hospital: FederatedDataset) -> None:
    assert by_hospital.metrics == ("auroc", "accuracy") and by_hospital.task == "binary"
    assert "ODbL" in by_hospital.license
    assert "Pollard" in by_hospital.citation


def test_length_of_stay_target_in_days_on_the_same_splits(
    by_hospital: FederatedDataset, load_from_mirror: Load
) -> None:
    import pandas as pd

    los = load_from_mirror(load_eicu, target="los")
    assert (los.name, los.task, los.primary_metric) == ("eicu-los", "regression", "mae")
    assert los.site_ids == by_hospital.site_ids and los.extra["dropped_zero_los"] == 12
    patient = pd.read_csv(los_mirror_file(), usecols=["unitdischargeoffset"])
    days = patient["unitdischargeoffset"].to_numpy() / 1440.0
    everything = np.concatenate([np.concatenate([s.train.y, s.test.y]) for s in los.sites])
    assert np.isin(np.round(everything, 9), np.round(days, 9)).all()
    assert everything.dtype == np.float64 and everything.min() > 0
    for s, b in zip(los.sites, by_hospital.sites, strict=True):
        assert len(s.train) <= len(b.train) and len(s.test) <= len(b.test)
    dropped = sum(len(b.train) + len(b.test) for b in by_hospital.sites) - everything.size
    assert 0 < dropped <= 12  # only stays with a zero offset leave
    assert 0.5 < float(np.median(everything)) < 2.0  # days, not minutes or hours
    with pytest.raises(ConfigError, match="target must be 'mortality' or 'los', got 'days'"):
        load_eicu(target="days")  # type: ignore[arg-type]


def los_mirror_file() -> str:
    from tests.conftest import require_mirror

    return str(require_mirror() / "eicu_demo" / "patient.csv.gz")
