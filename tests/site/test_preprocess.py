"""A site's local preprocessing statistics are computed once, not once per task."""

from __future__ import annotations

import numpy as np

from fedcare.data.base import Dataset
from fedcare.site.preprocess import LocalStats, Preprocessor

SPEC = {"impute": "mean", "scale": "local"}


def _rows() -> Dataset:
    X = np.array([[1.0, np.nan, 2.0], [3.0, np.nan, 4.0], [5.0, np.nan, np.nan]])
    return Dataset(X, np.array([0, 1, 0]))


def test_local_statistics_are_computed_once_per_dataset_and_match_a_fresh_computation() -> None:
    train, stats = _rows(), LocalStats()
    fresh = Preprocessor.for_task(SPEC, {}, train)
    first = Preprocessor.for_task(SPEC, {}, train, stats=stats)
    again = Preprocessor.for_task(SPEC, {}, train, stats=stats)
    assert first.mean is again.mean and first.std is again.std  # not computed again
    assert fresh.mean is not None and fresh.std is not None and first.mean is not None
    np.testing.assert_array_equal(first.mean, [3.0, 0.0, 3.0])  # an all-missing column: 0
    np.testing.assert_array_equal(first.mean, fresh.mean)
    np.testing.assert_array_equal(first.std, fresh.std)
    assert not first.mean.flags.writeable  # shared by every task: nobody changes it
    other = Dataset(train.X * 2, train.y)
    doubled = Preprocessor.for_task(SPEC, {}, other, stats=stats)
    assert doubled.mean is not None
    np.testing.assert_array_equal(doubled.mean, [6.0, 0.0, 6.0])  # another dataset: new ones
    a, b = first.apply(train), fresh.apply(train)
    assert a.X.tobytes() == b.X.tobytes()
