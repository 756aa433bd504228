import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcare.aggregation import Contribution, ValidateUpdates, WeightedMean, chain
from fedcare.aggregation.validate import DEFAULT_OUTLIER_RATIO
from fedcare.errors import AggregationError, ValidationError
from fedcare.records.arrays import ArrayRecord

TEMPLATE = ArrayRecord({"w": np.zeros(3), "b": np.zeros(())})


def contrib(site: str, w: list[float], b: float, weight: float) -> Contribution:
    return Contribution(site, ArrayRecord({"w": np.asarray(w, dtype=np.float64), "b": b}), weight)


def test_weighted_mean_by_hand() -> None:
    agg = WeightedMean()
    cs = [contrib("a", [1, 2, 3], 1.0, 1), contrib("b", [3, 2, 1], 3.0, 3)]
    result, _, m = agg.update(agg.init(TEMPLATE), cs)
    # (1*[1,2,3] + 3*[3,2,1]) / 4 = [2.5, 2, 1.5]; b = (1 + 9) / 4
    np.testing.assert_allclose(result["w"], [2.5, 2.0, 1.5])
    assert float(result["b"]) == pytest.approx(2.5)
    assert m["num_contributions"] == 2 and m["total_weight"] == 4.0
    unweighted, _, _ = WeightedMean(weighted=False).update(agg.init(TEMPLATE), cs)
    np.testing.assert_allclose(unweighted["w"], [2.0, 2.0, 2.0])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3),
            st.floats(0.1, 100.0),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_streaming_equals_batch_mean(rows: list[tuple[list[float], float]]) -> None:
    agg = WeightedMean()
    consumed: list[int] = []

    def stream():  # a generator: the aggregator sees one contribution at a time
        for i, (w, weight) in enumerate(rows):
            consumed.append(i)
            yield contrib(str(i), w, 0.0, weight)

    result, _, _ = agg.update(agg.init(TEMPLATE), stream())
    values = np.array([w for w, _ in rows])
    weights = np.array([wt for _, wt in rows])
    expected = (values * weights[:, None]).sum(axis=0) / weights.sum()
    np.testing.assert_allclose(result["w"], expected, rtol=1e-9, atol=1e-9)
    assert consumed == list(range(len(rows)))


def test_empty_round_is_an_error() -> None:
    agg = WeightedMean()
    with pytest.raises(AggregationError, match="no contributions"):
        agg.update(agg.init(TEMPLATE), [])


def test_validation_layer_rejects_nan_and_wrong_shapes_naming_sites() -> None:
    agg = chain(ValidateUpdates, inner=WeightedMean())
    cs = [
        contrib("good", [1, 1, 1], 0.0, 1),
        contrib("nan", [np.nan, 1, 1], 0.0, 1),
        Contribution("shape", ArrayRecord({"w": np.zeros(4), "b": 0.0}), 1),
        contrib("good2", [3, 3, 3], 0.0, 1),
    ]
    result, _, m = agg.update(agg.init(TEMPLATE), cs)
    np.testing.assert_allclose(result["w"], [2, 2, 2])
    assert m["rejected_sites"] == ["nan", "shape"]
    assert "NaN" in m["rejected_reasons"]["nan"] and "'w'" in m["rejected_reasons"]["nan"]
    assert "shape (4,)" in m["rejected_reasons"]["shape"]
    assert m["num_contributions"] == 2


def test_norm_bound_rejects_absurd_updates() -> None:
    agg = ValidateUpdates(WeightedMean(), max_norm=10.0)
    cs = [contrib("a", [1, 0, 0], 0.0, 1), contrib("huge", [100, 0, 0], 0.0, 1)]
    result, _, m = agg.update(agg.init(TEMPLATE), cs)
    assert m["rejected_sites"] == ["huge"] and "above the bound" in m["rejected_reasons"]["huge"]
    np.testing.assert_allclose(result["w"], [1, 0, 0])


@pytest.mark.parametrize("at", [0, 1, 3])  # the outlier first, in the middle, last
def test_one_update_of_outlying_norm_is_held_back_and_rejected(at: int) -> None:
    agg = ValidateUpdates(WeightedMean(), outlier_ratio=100.0)
    honest = [contrib(f"h{i}", [1.0 + i, 0, 0], 0.0, 10 * (i + 1)) for i in range(3)]
    cs = [*honest]
    cs.insert(at, contrib("scaled", [3e6, 0, 0], 0.0, 10))
    result, _, m = agg.update(agg.init(TEMPLATE), cs)
    assert m["rejected_sites"] == ["scaled"]
    assert "more than 100 times the largest other update's (3)" in m["rejected_reasons"]["scaled"]
    expected, _, _ = WeightedMean().update(WeightedMean().init(TEMPLATE), honest)
    np.testing.assert_allclose(result["w"], expected["w"], rtol=1e-12)
    assert m["num_contributions"] == 3


def test_heterogeneous_honest_norms_and_a_single_update_pass_the_outlier_screen() -> None:
    agg = ValidateUpdates(WeightedMean(), outlier_ratio=100.0)
    cs = [contrib("small", [0.01, 0, 0], 0.0, 5), contrib("big", [0.9, 0, 0], 0.0, 500)]
    _, _, m = agg.update(agg.init(TEMPLATE), cs)  # 90 times: still within the ratio
    assert m["rejected_sites"] == [] and m["num_contributions"] == 2
    _, _, alone = agg.update(agg.init(TEMPLATE), [contrib("only", [1e9, 0, 0], 0.0, 1)])
    assert alone["rejected_sites"] == [] and alone["num_contributions"] == 1
    with pytest.raises(ValidationError, match="outlier_ratio must be > 1"):
        ValidateUpdates(WeightedMean(), outlier_ratio=0.5)


def test_the_default_stacks_screen_outlying_norms_and_the_bare_layer_does_not() -> None:
    from fedcare.aggregation import build_aggregator
    from fedcare.strategy.fedopt import default_aggregator

    assert default_aggregator().outlier_ratio == DEFAULT_OUTLIER_RATIO  # type: ignore[attr-defined]
    assert build_aggregator([]).outlier_ratio == DEFAULT_OUTLIER_RATIO  # type: ignore[attr-defined]
    assert ValidateUpdates(WeightedMean()).outlier_ratio is None


def test_negative_or_nan_weight_is_refused() -> None:
    from fedcare.errors import ValidationError

    with pytest.raises(ValidationError, match="site 'a' has weight -1"):
        contrib("a", [0, 0, 0], 0.0, -1)
    with pytest.raises(ValidationError, match="weight nan"):
        contrib("a", [0, 0, 0], 0.0, float("nan"))
