"""PneumoniaMNIST over simulated sites with a Dirichlet label skew."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedcare.data.base import Dataset, FederatedDataset
from fedcare.data.pneumonia import load_pneumoniamnist
from fedcare.errors import ConfigError

Load = Callable[..., FederatedDataset]
# Mirror README (= MedMNIST INFO): normal/pneumonia per official split.
TRAIN, VAL, TEST = (1214, 3494), (135, 389), (234, 390)


@pytest.fixture(scope="module")
def pneumonia(load_from_mirror: Load) -> FederatedDataset:
    return load_from_mirror(load_pneumoniamnist)


def class_counts(y: np.ndarray) -> tuple[int, int]:
    return int(np.sum(y == 0)), int(np.sum(y == 1))


def fingerprints(X: np.ndarray) -> Counter[bytes]:
    pixels = np.rint(np.asarray(X) * 255).astype(np.uint8).reshape(len(X), -1)
    return Counter(row.tobytes() for row in pixels)


def test_official_splits_are_covered_once(pneumonia: FederatedDataset, mirror: Path) -> None:
    assert pneumonia.site_ids == [f"site-{k}" for k in range(5)]
    pooled = pneumonia.pooled()
    assert class_counts(pooled.train.y) == TRAIN
    assert class_counts(pooled.test.y) == VAL
    holdout = pneumonia.extra["holdout"]
    assert isinstance(holdout, Dataset) and class_counts(holdout.y) == TEST
    # Every official train and val image exactly once over the sites (as a multiset).
    with np.load(mirror / "pneumoniamnist" / "pneumoniamnist.npz") as npz:
        assert fingerprints(pooled.train.X) == fingerprints(npz["train_images"] / 255)
        assert fingerprints(pooled.test.X) == fingerprints(npz["val_images"] / 255)


def test_images(pneumonia: FederatedDataset) -> None:
    s = pneumonia.sites[0]
    assert s.train.X.dtype == np.float32 and s.train.X.shape[1:] == (1, 28, 28)
    assert s.train.X.min() >= 0.0 and s.train.X.max() <= 1.0
    assert s.train.y.dtype == np.int64
    assert pneumonia.metrics == ("auroc", "accuracy")


def test_labels_are_skewed_and_val_follows_train(pneumonia: FederatedDataset) -> None:
    rates = [s.train.y.mean() for s in pneumonia.sites]
    assert max(rates) - min(rates) > 0.2
    for s in pneumonia.sites:
        assert len(s.train) >= 50 and len(s.test) > 0
    for c, total_train, total_val in zip((0, 1), TRAIN, VAL, strict=True):
        for s in pneumonia.sites:
            share = np.sum(s.train.y == c) / total_train
            assert abs(np.sum(s.test.y == c) - share * total_val) < 1.0


def test_seeded(pneumonia: FederatedDataset, load_from_mirror: Load) -> None:
    same = load_from_mirror(load_pneumoniamnist, seed=0)
    other = load_from_mirror(load_pneumoniamnist, seed=1)
    for a, b in zip(pneumonia.sites, same.sites, strict=True):
        np.testing.assert_array_equal(a.train.y, b.train.y)
        np.testing.assert_array_equal(a.test.X, b.test.X)
    assert [len(s.train) for s in other.sites] != [len(s.train) for s in pneumonia.sites]


def test_num_sites_and_metadata(load_from_mirror: Load) -> None:
    ds = load_from_mirror(load_pneumoniamnist, num_sites=3, alpha=1.0, seed=4)
    assert ds.site_ids == ["site-0", "site-1", "site-2"]
    assert "CC BY 4.0" in ds.license and "MedMNIST" in ds.citation
    assert "alpha=1.0" in ds.description


@pytest.mark.parametrize(
    ("options", "match"),
    [({"num_sites": 0}, "num_sites"), ({"alpha": -1.0}, "alpha"), ({"seed": "x"}, "seed")],
)
def test_invalid_options_are_named(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_pneumoniamnist(**options)  # type: ignore[arg-type]
