"""Mean and variance: federated equals pooled numpy (no suppression)."""

from __future__ import annotations

from fedcare.data.base import FederatedDataset
from tests.analytics.helpers import close, pooled_frame, run

VARS = ["age", "trestbps", "chol", "thalach", "oldpeak"]


def test_moments_equal_pooled(heart: FederatedDataset) -> None:
    result, _ = run(heart, {"queries": [{"type": "moments", "variables": VARS}]})
    got = result.queries[0]
    pooled = pooled_frame(heart)
    for i, var in enumerate(VARS):
        x = pooled[var].dropna().to_numpy()
        assert got["count"][i] == len(x)
        assert close(got["mean"][i], x.mean())
        assert close(got["variance"][i], x.var(ddof=1))
    assert got["suppressed"] == {}
    assert sorted(got["sites"]) == sorted(heart.site_ids)
