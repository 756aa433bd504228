import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedcare.aggregation import NormBound, TrimmedMean, WeightedMean, site_clip
from fedcare.aggregation.norm_bound import clip_to_norm
from fedcare.errors import ConfigError, ValidationError

from .helpers import TEMPLATE, contributions, flat, honest_and_outlier, record


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (5,), elements=st.floats(-1e4, 1e4)), st.floats(0.01, 100))
def test_clip_scales_down_to_the_bound_only(row: np.ndarray, bound: float) -> None:
    original = record(row)
    clipped, norm = clip_to_norm(original, bound)
    assert norm == pytest.approx(np.linalg.norm(row))
    expected = row * min(1.0, bound / norm) if norm > 0 else row
    np.testing.assert_allclose(flat(clipped), expected, rtol=1e-12, atol=1e-12)
    assert clipped.norm() <= bound * (1 + 1e-9) or norm <= bound
    np.testing.assert_array_equal(flat(original), row)  # input untouched


def test_layer_equals_numpy_weighted_mean_of_clipped_rows() -> None:
    matrix = honest_and_outlier(0, 3, 100.0)
    weights = [1.0, 2.0, 3.0, 4.0]
    agg = NormBound(WeightedMean(), max_norm=3.0)
    result, _, m = agg.update(agg.init(TEMPLATE), contributions(matrix, weights))
    norms = np.linalg.norm(matrix, axis=1)
    clipped = matrix * np.minimum(1.0, 3.0 / norms)[:, None]
    np.testing.assert_allclose(flat(result), np.average(clipped, axis=0, weights=weights))
    assert m["clipped_sites"] == ["s3"]
    assert m["clipped_fraction"] == pytest.approx(0.25)
    assert m["norms"]["s3"] == pytest.approx(norms[3])
    assert m["anomaly_scores"]["s3"] == pytest.approx(norms[3] / np.median(norms))
    assert max(m["anomaly_scores"], key=m["anomaly_scores"].get) == "s3"
    assert m["num_contributions"] == 4  # from the inner mean


def test_scores_are_the_max_over_layers() -> None:
    matrix = honest_and_outlier(4, 5, 100.0)
    agg = NormBound(TrimmedMean(count=1), max_norm=2.0)
    _, _, m = agg.update(agg.init(TEMPLATE), contributions(matrix))
    layers = m["anomaly_scores_by_layer"]
    assert set(layers) == {"norm_bound", "trimmed_mean"}
    for site, score in m["anomaly_scores"].items():
        assert score == max(layers["norm_bound"][site], layers["trimmed_mean"][site])


def test_site_half_matches_server_half() -> None:
    agg = NormBound(NormBound(WeightedMean(), max_norm=2.0), max_norm=5.0)
    spec = agg.site_spec()
    assert spec == {"norm_bound": {"version": 1, "max_norm": 2.0}}
    row = np.array([3.0, 4.0, 0.0, 0.0, 12.0])  # norm 13
    np.testing.assert_allclose(flat(site_clip(spec, record(row))), row * 2.0 / 13.0)
    assert site_clip({}, record(row)) == record(row)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"version": 2, "max_norm": 1.0}, "expected version 1"),
        ({"version": 1, "max_norm": -1}, "max_norm must be > 0"),
        ({"version": 1}, "max_norm must be > 0"),
    ],
)
def test_bad_site_spec_is_refused(entry: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        site_clip({"norm_bound": entry}, record([1, 2, 3, 4, 5]))


@pytest.mark.parametrize("bound", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_bound(bound: float) -> None:
    with pytest.raises(ConfigError, match="max_norm"):
        NormBound(WeightedMean(), max_norm=bound)
