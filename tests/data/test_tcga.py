"""TCGA-BRCA as in FLamby's Fed-TCGA-BRCA."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcare.data.base import FederatedDataset
from fedcare.data.tcga import load_tcga_brca

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
