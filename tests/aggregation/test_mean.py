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


def _old_weighted_mean(template: ArrayRecord, cs: list[Contribution]) -> dict[str, np.ndarray]:
    """The whole-array formula WeightedMean used before it went blockwise (the reference)."""
    sums = {k: np.zeros(v.shape, dtype=np.float64) for k, v in template.items()}
    total = 0.0
    for c in cs:
        for k, acc in sums.items():
            acc += float(c.weight) * c.arrays[k]
        total += float(c.weight)
    return {k: (acc / total).astype(template[k].dtype) for k, acc in sums.items()}


def _random_model(rng: np.random.Generator, dtype: type, scale: float) -> dict[str, np.ndarray]:
    from fedcare.aggregation.blockwise import BLOCK

    shapes = {"big": (BLOCK + 12_345,), "matrix": (1031, 7), "bias": (13,), "scalar": ()}
    return {
        k: (rng.normal(size=s) * 10.0 ** rng.uniform(-scale, scale, size=s)).astype(dtype)
        for k, s in shapes.items()
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blockwise_mean_is_bitwise_the_whole_array_formula(dtype: type) -> None:
    rng = np.random.default_rng(16)
    template = ArrayRecord(_random_model(rng, dtype, 0), copy=False)
    weights = [37.0, 1.0, 1234.0, 0.3]
    cs = [
        Contribution(f"s{i}", ArrayRecord(_random_model(rng, dtype, 6), copy=False), w)
        for i, w in enumerate(weights)
    ]
    result, _, _ = WeightedMean().update(WeightedMean().init(template), cs)
    expected = _old_weighted_mean(template, cs)
    for k, v in expected.items():
        assert result[k].dtype == v.dtype and result[k].shape == v.shape
        assert result[k].tobytes() == v.tobytes(), k


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 40),
    st.lists(st.floats(1e-3, 1e4), min_size=1, max_size=5),
    st.integers(0, 2**32 - 1),
)
def test_mean_bitwise_on_small_odd_sizes(
    dtype: type, size: int, weights: list[float], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    template = ArrayRecord({"w": np.zeros(size, dtype=dtype)})
    cs = [
        Contribution(str(i), ArrayRecord({"w": (rng.normal(size=size) * 1e3).astype(dtype)}), w)
        for i, w in enumerate(weights)
    ]
    result, _, _ = WeightedMean().update(WeightedMean().init(template), cs)
    assert result["w"].tobytes() == _old_weighted_mean(template, cs)["w"].tobytes()


def test_mean_of_read_only_memory_mapped_replies_is_bitwise_the_in_memory_mean(
    tmp_path,
) -> None:
    from fedcare.aggregation.blockwise import BLOCK

    rng = np.random.default_rng(5)
    size = BLOCK + 999
    template = ArrayRecord({"w": np.zeros(size, dtype=np.float32)})
    in_memory, mapped = [], []
    for i in range(3):
        values = rng.normal(size=size).astype(np.float32)
        values.tofile(tmp_path / f"{i}.bin")
        in_memory.append(Contribution(f"s{i}", ArrayRecord({"w": values}), 10.0 + i))
        view = np.memmap(tmp_path / f"{i}.bin", dtype=np.float32, mode="r")
        mapped.append(Contribution(f"s{i}", ArrayRecord({"w": view}, copy=False), 10.0 + i))
    agg = chain(ValidateUpdates, inner=WeightedMean())
    from_files, _, m = agg.update(agg.init(template), mapped)
    from_memory, _, _ = WeightedMean().update(WeightedMean().init(template), in_memory)
    assert m["rejected_sites"] == [] and m["num_contributions"] == 3
    assert from_files["w"].tobytes() == from_memory["w"].tobytes()
    for c, ref in zip(mapped, in_memory, strict=True):  # pages released, values unchanged
        np.testing.assert_array_equal(c.arrays["w"], ref.arrays["w"])


def test_nan_past_the_first_block_is_rejected() -> None:
    from fedcare.aggregation.blockwise import BLOCK

    template = ArrayRecord({"w": np.zeros(BLOCK + 3, dtype=np.float32)})
    bad = np.ones(BLOCK + 3, dtype=np.float32)
    bad[BLOCK + 1] = np.nan
    agg = ValidateUpdates(WeightedMean())
    result, _, m = agg.update(
        agg.init(template),
        [
            Contribution("ok", ArrayRecord({"w": np.full(BLOCK + 3, 2, dtype=np.float32)}), 1),
            Contribution("bad", ArrayRecord({"w": bad}, copy=False), 1),
        ],
    )
    assert m["rejected_sites"] == ["bad"] and "NaN" in m["rejected_reasons"]["bad"]
    assert np.all(result["w"] == 2.0)


def test_no_reference_to_a_contribution_is_kept_once_aggregated() -> None:
    import weakref

    from fedcare.strategy.fedopt import default_aggregator

    refs: list[weakref.ref[Contribution]] = []
    alive_when_asked: list[int] = []

    def stream():
        for i in range(6):
            alive_when_asked.append(sum(r() is not None for r in refs))
            c = contrib(f"s{i}", [1.0 + i, 0, 0], 0.0, 1)
            refs.append(weakref.ref(c))
            yield c
            del c

    agg = default_aggregator()
    result, _, _ = agg.update(agg.init(TEMPLATE), stream())
    # growing norms: the screening holds back the newest one while the next is read
    assert max(alive_when_asked) <= 1
    assert all(r() is None for r in refs)
    np.testing.assert_allclose(result["w"], [3.5, 0, 0])
