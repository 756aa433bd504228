import numpy as np
import pytest

from fedcare.aggregation.distributed_dp import site_add_noise
from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord


def test_sum_of_site_shares_has_the_central_variance() -> None:
    # n sites each add N(0, (zC)^2 / n); the server's sum carries N(0, (zC)^2). Chi-square
    # on 5,000 coordinates: the sample variance is within 5% of (zC)^2 = 0.64.
    n, d = 8, 5000
    template = ArrayRecord({"w": np.zeros(d)})
    spec = {"distributed_dp": {"version": 1, "clip_norm": 0.4, "site_std": 0.8 / np.sqrt(n)}}
    rngs = [np.random.default_rng([9, i]) for i in range(n)]
    total = sum(site_add_noise(spec, template, rngs[i])["w"] for i in range(n))
    assert np.var(total) == pytest.approx(0.64, rel=0.05)


def test_site_half_clips_before_noising() -> None:
    spec = {"distributed_dp": {"version": 1, "clip_norm": 1.0, "site_std": 0.0}}
    big = ArrayRecord({"w": np.array([30.0, 40.0])})
    out = site_add_noise(spec, big, np.random.default_rng(0))
    assert out.norm() == pytest.approx(1.0)
    assert site_add_noise({}, big, np.random.default_rng(0)) is big
    with pytest.raises(ValidationError, match="version"):
        site_add_noise({"distributed_dp": {"version": 9}}, big, np.random.default_rng(0))
    with pytest.raises(ValidationError, match="site_std"):
        bad = {"distributed_dp": {"version": 1, "clip_norm": 1.0, "site_std": -1}}
        site_add_noise(bad, big, np.random.default_rng(0))
