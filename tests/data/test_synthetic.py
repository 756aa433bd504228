"""The seeded synthetic dataset."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.data.registry import load_dataset
from fedcare.data.synthetic import load_synthetic
from fedcare.errors import ConfigError


def test_defaults_shapes_and_counts() -> None:
    ds = load_synthetic()
    assert ds.name == "synthetic" and ds.task == "binary"
    assert ds.site_ids == ["site-0", "site-1", "site-2", "site-3"]
    assert len(ds.feature_names) == 10
    for s in ds.sites:
        assert (len(s.train), len(s.test)) == (48, 16)
        assert s.train.X.shape == (48, 10) and s.test.X.shape == (16, 10)
        assert s.train.y.dtype == np.int64 and set(np.unique(s.train.y)) <= {0, 1}
        assert s.train.time is None and np.isfinite(s.train.X).all()
    labels = np.concatenate([s.train.y for s in ds.sites])
    assert 0.2 < labels.mean() < 0.8  # both classes well represented


def test_deterministic_per_seed() -> None:
    a, b, c = load_synthetic(seed=3), load_synthetic(seed=3), load_synthetic(seed=4)
    for sa, sb, sc in zip(a.sites, b.sites, c.sites, strict=True):
        np.testing.assert_array_equal(sa.train.X, sb.train.X)
        np.testing.assert_array_equal(sa.test.y, sb.test.y)
        assert not np.array_equal(sa.train.X, sc.train.X)


def test_sizes_follow_the_options() -> None:
    ds = load_dataset("synthetic", num_sites=2, n_features=3, rows_per_site=9, seed=1)
    assert ds.site_ids == ["site-0", "site-1"]
    for s in ds.sites:
        assert s.train.X.shape == (7, 3) and s.test.X.shape == (2, 3)


def test_labels_follow_the_linear_rule() -> None:
    ds = load_synthetic(rows_per_site=400)
    w, b = np.asarray(ds.extra["weights"]), float(ds.extra["bias"])  # type: ignore[arg-type]
    pooled = ds.pooled().train
    agreement = ((pooled.X @ w + b > 0).astype(int) == pooled.y).mean()
    assert agreement > 0.8


@pytest.mark.parametrize(
    "options",
    [{"num_sites": 0}, {"n_features": 0}, {"rows_per_site": 3}, {"seed": -1}, {"seed": 1.5}],
)
def test_bad_options(options: dict[str, object]) -> None:
    name = next(iter(options))
    with pytest.raises(ConfigError, match=name):
        load_synthetic(**options)  # type: ignore[arg-type]


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'rows'.*accepted: num_sites"):
        load_dataset("synthetic", rows=8)
