"""Correlation (listwise): federated equals pooled numpy."""

from __future__ import annotations

import numpy as np

from fedcare.data.base import FederatedDataset
from tests.analytics.helpers import close, pooled_frame, run

VARS = ["age", "trestbps", "chol", "thalach", "oldpeak"]


def test_correlation_listwise_equals_pooled(heart: FederatedDataset) -> None:
    result, _ = run(heart, {"queries": [{"type": "correlation", "variables": VARS}]})
    rows = pooled_frame(heart)[VARS].dropna().to_numpy()
    got = result.queries[0]
    assert got["count"] == len(rows)
    assert close(got["correlation"], np.corrcoef(rows, rowvar=False))
    assert close(got["covariance"], np.cov(rows, rowvar=False))
