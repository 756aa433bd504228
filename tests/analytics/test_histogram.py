"""Histograms on shared edges: federated equals pooled numpy."""

from __future__ import annotations

import numpy as np

from fedcare.data.base import FederatedDataset
from tests.analytics.helpers import pooled_frame, run


def test_histogram_equals_pooled(heart: FederatedDataset) -> None:
    edges = [100.0, 150.0, 200.0, 250.0, 300.0, 350.0, 600.0]
    result, _ = run(heart, {"queries": [{"type": "histogram", "variable": "chol", "edges": edges}]})
    x = pooled_frame(heart)["chol"].dropna().to_numpy()
    expected, _ = np.histogram(x, bins=edges)
    got = result.queries[0]
    assert got["counts"] == expected.tolist()
    assert all(got["complete"])
    assert got["outside"] == len(x) - expected.sum()
