"""The validation layer's one pass per update: the float64 sum of squares that the norm bound
and the outlier screening need is also the finiteness check, with the same refusals and
messages as the separate checks, and the screening reuses the norm instead of taking it again."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.aggregation import Contribution, ValidateUpdates, WeightedMean
from fedcare.aggregation import validate as validate_module
from fedcare.aggregation.blockwise import BLOCK, norm, sq_norm
from fedcare.records.arrays import ArrayRecord

TEMPLATE = ArrayRecord({"w": np.zeros(4, np.float32), "b": np.zeros(2, np.float32)})
LAYERS = {
    "bare": {},
    "outlier": {"outlier_ratio": 100.0},
    "bound": {"max_norm": 1e6},
    "both": {"max_norm": 1e6, "outlier_ratio": 100.0},
}


def update(site: str, w: list[float], b: list[float], dtype: type = np.float32) -> Contribution:
    arrays = {"w": np.asarray(w, dtype=dtype), "b": np.asarray(b, dtype=dtype)}
    return Contribution(site, ArrayRecord(arrays, copy=False), 1.0)


@pytest.mark.parametrize("layer", list(LAYERS))
def test_nan_and_inf_are_refused_with_the_same_message_whether_a_norm_is_taken_or_not(
    layer: str,
) -> None:
    agg = ValidateUpdates(WeightedMean(), **LAYERS[layer])  # type: ignore[arg-type]
    cs = [
        update("good", [1, 2, 3, 4], [0, 0]),
        update("nan", [1, np.nan, 3, 4], [0, 0]),
        update("inf", [1, 2, 3, 4], [-np.inf, 0]),
        update("both", [np.inf, 2, 3, 4], [np.nan, 0]),
        update("good2", [3, 2, 1, 0], [0, 2]),
    ]
    result, _, m = agg.update(agg.init(TEMPLATE), cs)
    assert m["rejected_sites"] == ["both", "inf", "nan"]
    reasons = m["rejected_reasons"]
    assert reasons["nan"] == "update from site 'nan' has NaN or infinite values in ['w']"
    assert reasons["inf"] == "update from site 'inf' has NaN or infinite values in ['b']"
    assert reasons["both"] == "update from site 'both' has NaN or infinite values in ['w', 'b']"
    np.testing.assert_array_equal(result["w"], [2, 2, 2, 2])
    np.testing.assert_array_equal(result["b"], [0, 1])


def test_finite_values_whose_squares_overflow_are_not_called_nan() -> None:
    template = ArrayRecord({"w": np.zeros(3)})
    huge = Contribution("huge", ArrayRecord({"w": np.array([1e200, 1.0, 2.0])}), 1.0)
    assert not np.isfinite(sq_norm(huge.arrays["w"]))  # the fused check must look closer
    small = Contribution("small", ArrayRecord({"w": np.array([1.0, 0.0, 0.0])}), 1.0)
    bounded = ValidateUpdates(WeightedMean(), max_norm=10.0)
    _, _, m = bounded.update(bounded.init(template), [huge, small])
    assert m["rejected_reasons"]["huge"] == (
        "update from site 'huge' has L2 norm inf, above the bound 10"
    )
    screened = ValidateUpdates(WeightedMean(), outlier_ratio=100.0)
    result, _, m = screened.update(screened.init(template), [huge])  # alone: nothing to compare
    assert m["rejected_sites"] == [] and result["w"][0] == 1e200


def test_each_array_is_squared_once_per_update_and_the_screening_reuses_the_norm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def counted(arr: np.ndarray, scratch: object = None) -> float:
        calls.append(arr.size)
        return sq_norm(arr, scratch)  # type: ignore[arg-type]

    monkeypatch.setattr(validate_module, "sq_norm", counted)
    agg = ValidateUpdates(WeightedMean(), max_norm=1e9, outlier_ratio=100.0)
    cs = [update(f"s{i}", [i, 1, 1, 1], [1, i]) for i in range(5)]
    cs.append(update("scaled", [3e6, 0, 0, 0], [0, 0]))
    _, _, m = agg.update(agg.init(TEMPLATE), cs)
    assert m["rejected_sites"] == ["scaled"]
    assert "more than 100 times the largest other update's" in m["rejected_reasons"]["scaled"]
    assert calls == [4, 2] * 6  # one pass over each array of each update, nothing twice


def test_the_norm_in_a_message_is_the_blockwise_norm_bitwise() -> None:
    rng = np.random.default_rng(1)
    big = (rng.normal(size=BLOCK + 1001) * 1e3).astype(np.float32)
    template = ArrayRecord({"w": np.zeros(big.size, np.float32)})
    agg = ValidateUpdates(WeightedMean(), max_norm=1.0)
    c = Contribution("s", ArrayRecord({"w": big}, copy=False), 1.0)
    zero = Contribution("zero", ArrayRecord({"w": np.zeros(big.size, np.float32)}), 1.0)
    _, _, m = agg.update(agg.init(template), [c, zero])
    expected = norm(c.arrays)  # a new float64 temporary per block, no scratch
    assert m["rejected_reasons"]["s"] == (
        f"update from site 's' has L2 norm {expected:.4g}, above the bound 1"
    )
