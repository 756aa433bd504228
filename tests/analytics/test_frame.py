"""A site's table for analytics from a built-in dataset's arrays."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.analytics.frame import column, site_frame
from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.errors import ConfigError, DataError


def test_survival_site_frame_has_time_and_event(tcga: FederatedDataset) -> None:
    site = tcga.sites[0]
    frame = site_frame(site, tcga.feature_names)
    assert len(frame) == len(site.train) + len(site.test)
    assert list(frame.columns[-2:]) == ["time", "event"]
    assert frame["time"].tolist() == [*site.train.time, *site.test.time]  # type: ignore[misc]


def test_binary_site_frame_defaults_to_positional_names() -> None:
    rows = Dataset(X=np.arange(6.0).reshape(3, 2), y=np.array([0, 1, 1]))
    frame = site_frame(SiteData("a", rows, rows))
    assert list(frame.columns) == ["x0", "x1", "label"]
    assert frame["label"].sum() == 4


def test_images_are_refused() -> None:
    rows = Dataset(X=np.zeros((2, 1, 4, 4)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="site 'img': analytics needs tabular features"):
        site_frame(SiteData("img", rows, rows))


def test_unknown_column_lists_the_known_ones() -> None:
    rows = Dataset(X=np.zeros((2, 1)), y=np.array([0, 1]))
    frame = site_frame(SiteData("a", rows, rows))
    with pytest.raises(ConfigError, match=r"q: unknown variable 'age'; columns: \['label', 'x0'\]"):
        column(frame, "age", what="q")
