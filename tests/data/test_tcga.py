"""TCGA-BRCA as in FLamby's Fed-TCGA-BRCA."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcare.data.base import Dataset, FederatedDataset
from fedcare.data.tcga import load_tcga_brca
from fedcare.errors import ConfigError

# FLamby's table "Train/Test: 248/63, 156/40, 164/42, 129/33, 129/33, 40/11" (mirror README).
SIZES = [(248, 63), (156, 40), (164, 42), (129, 33), (129, 33), (40, 11)]
EVENTS = [59, 39, 22, 19, 9, 3]


@pytest.fixture(scope="module")
def tcga(load_from_mirror: Callable[..., FederatedDataset]) -> FederatedDataset:
    return load_from_mirror(load_tcga_brca)


def test_sizes_and_events_equal_flamby(tcga: FederatedDataset) -> None:
    assert tcga.site_ids == [f"region-{c}" for c in range(6)]
    assert [(len(s.train), len(s.test)) for s in tcga.sites] == SIZES
    assert [int(s.train.y.sum() + s.test.y.sum()) for s in tcga.sites] == EVENTS
    pooled = tcga.pooled()
    assert (len(pooled.train), len(pooled.test)) == (866, 222)


def test_features_and_target(tcga: FederatedDataset, mirror: Path) -> None:
    header = pd.read_csv(mirror / "tcga_brca" / "brca.csv", nrows=0).columns
    assert tcga.feature_names == tuple(header[1:40])
    assert tcga.task == "survival" and tcga.metrics == ("cindex",)
    for s in tcga.sites:
        for part in (s.train, s.test):
            assert part.X.shape[1] == 39
            assert part.time is not None and np.all(part.time >= 0)
            assert set(np.unique(part.y)) <= {0, 1}
            # Age in years, unscaled (FLamby does not scale), then 0/1 indicators.
            assert part.X[:, 0].min() >= 26 and part.X[:, 0].max() <= 90
            assert set(np.unique(part.X[:, 1:])) <= {0.0, 1.0}


def test_sites_follow_the_tissue_source_site_regions(tcga: FederatedDataset, mirror: Path) -> None:
    folder = mirror / "tcga_brca"
    split = pd.read_csv(folder / "train_test_split.csv")
    centers = pd.read_csv(folder / "centers.csv").set_index("TSS Code")["Region"]
    region = split["pid"].str.split("-").str[1].map(centers)
    regions = tcga.extra["regions"]
    assert isinstance(regions, dict)
    index = {r: c for c, r in enumerate(regions.values())}
    np.testing.assert_array_equal(
        region.map(index), split["fold2"].str.split("_").str[1].astype(int)
    )


def test_metadata(tcga: FederatedDataset) -> None:
    assert "GDC" in tcga.license and "identify" in tcga.license
    assert "FLamby" in tcga.citation
    assert "region-5 (Canada): 40/11" in tcga.description


def _rows(part: Dataset) -> np.ndarray:
    """A part's rows (features, event, time) in lexicographic order."""
    assert part.time is not None
    rows = np.column_stack([part.X, part.y, part.time])
    return rows[np.lexsort(rows.T)]


def test_default_split_is_flambys_stored_split(tcga: FederatedDataset, mirror: Path) -> None:
    folder = mirror / "tcga_brca"
    brca = pd.read_csv(folder / "brca.csv")
    fold = brca["pid"].map(pd.read_csv(folder / "train_test_split.csv").set_index("pid")["fold2"])
    assert tcga.extra["split_seed"] is None
    assert "FLamby's fixed train/test split" in tcga.description
    for c, site in enumerate(tcga.sites):
        for name, part in (("train", site.train), ("test", site.test)):
            expected = brca[fold == f"{name}_{c}"]  # brca.csv order, as FLamby reads it
            np.testing.assert_array_equal(part.X, expected.iloc[:, 1:40].to_numpy(dtype=float))
            np.testing.assert_array_equal(part.y, expected["E"].to_numpy())
            np.testing.assert_array_equal(part.time, expected["T"].to_numpy(dtype=float))


def test_a_split_seed_redivides_each_region_stratified_on_the_event(
    tcga: FederatedDataset, load_from_mirror: Callable[..., FederatedDataset]
) -> None:
    other = load_from_mirror(load_tcga_brca, split_seed=7)
    again = load_from_mirror(load_tcga_brca, split_seed=7)
    assert other.extra["split_seed"] == 7 and "random_state=7" in other.description
    moved = 0
    for a, b, c in zip(tcga.sites, other.sites, again.sites, strict=True):
        assert (len(b.train), len(b.test)) == (len(a.train), len(a.test))
        whole_a = Dataset.concat([a.train, a.test])
        whole_b = Dataset.concat([b.train, b.test])
        np.testing.assert_array_equal(_rows(whole_a), _rows(whole_b))  # the same patients
        np.testing.assert_array_equal(b.test.X, c.test.X)  # reproducible
        events, n = int(whole_b.y.sum()), len(whole_b)
        # Stratified: the test events are the test share of the region's events, rounded.
        assert abs(int(b.test.y.sum()) - events * len(b.test) / n) < 1
        moved += not np.array_equal(_rows(a.test), _rows(b.test))
    assert moved == 6


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, True, "7"])
def test_bad_split_seed_is_named(bad: object) -> None:
    with pytest.raises(ConfigError, match="split_seed must be"):
        load_tcga_brca(split_seed=bad)  # type: ignore[arg-type]
