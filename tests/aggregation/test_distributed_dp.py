import numpy as np
import pytest

from fedcare.aggregation import Contribution, WeightedMean
from fedcare.aggregation.distributed_dp import DistributedGaussian, site_add_noise
from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord


def test_sum_of_site_shares_has_the_central_variance() -> None:
    # n sites each add N(0, (zC)^2 / n); the server's sum carries N(0, (zC)^2). Chi-square
    # on 5,000 coordinates: the sample variance is within 5% of (zC)^2 = 0.64.
    n, d = 8, 5000
    template = ArrayRecord({"w": np.zeros(d)})
    agg = DistributedGaussian(WeightedMean(), noise_multiplier=2.0, clip_norm=0.4, num_sites=n)
    spec = agg.site_spec()
    rngs = [np.random.default_rng([9, i]) for i in range(n)]
    contribs = [Contribution(f"s{i}", site_add_noise(spec, template, rngs[i])) for i in range(n)]
    result, _, meas = agg.update(agg.init(template), contribs)
    total = result["w"] * n
    assert np.var(total) == pytest.approx(0.64, rel=0.05)
    assert meas["noise_std"] == pytest.approx(0.8)
    assert spec["distributed_dp"]["site_std"] == pytest.approx(0.8 / np.sqrt(n))


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


def test_dropouts_are_accounted_with_the_noise_actually_added() -> None:
    template = ArrayRecord({"w": np.zeros(3)})
    agg = DistributedGaussian(WeightedMean(), noise_multiplier=2.0, clip_norm=1.0, num_sites=4)
    contribs = [Contribution("a", template), Contribution("b", template)]
    _, _, meas = agg.update(agg.init(template), contribs)
    assert meas["dp_event"]["noise_multiplier"] == pytest.approx(2.0 * np.sqrt(0.5))
    assert meas["denominator"] == 4
    # a secure sum arrives as one contribution whose weight counts the sites in it
    one = [Contribution("secure-sum", ArrayRecord({"w": np.full(3, 0.5)}), weight=3.0)]
    result, _, meas = agg.update(agg.init(template), one)
    assert meas["dp_event"]["noise_multiplier"] == pytest.approx(2.0 * np.sqrt(0.75))
    np.testing.assert_allclose(result["w"], 0.5 * 3 / 4)
