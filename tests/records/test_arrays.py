import numpy as np
import pytest

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord


def rec(**arrays: object) -> ArrayRecord:
    return ArrayRecord(arrays)


def test_arrays_are_copied_and_read_only() -> None:
    source = np.array([1.0, 2.0])
    r = rec(w=source)
    source[0] = 99.0
    assert r["w"][0] == 1.0
    with pytest.raises(ValueError):
        r["w"][0] = 5.0


def test_arithmetic_returns_new_records_and_keeps_operands() -> None:
    a, b = rec(w=[1.0, 2.0], b=3.0), rec(w=[0.5, 0.5], b=1.0)
    assert (a + b) == rec(w=[1.5, 2.5], b=4.0)
    assert (a - b) == rec(w=[0.5, 1.5], b=2.0)
    assert a.scale(2) == rec(w=[2.0, 4.0], b=6.0)
    assert a == rec(w=[1.0, 2.0], b=3.0)
    assert a.sq_norm() == pytest.approx(1 + 4 + 9)


def test_structure_mismatch_names_the_array() -> None:
    a = rec(w=np.zeros(3))
    with pytest.raises(ValidationError, match=r"'w' has shape \(2,\), expected \(3,\)"):
        a + rec(w=np.zeros(2))
    with pytest.raises(ValidationError, match=r"missing arrays \['w'\] and unexpected \['v'\]"):
        a.check_structure(rec(v=np.zeros(3)))


def test_flatten_roundtrip_and_prefixes() -> None:
    a = rec(w=np.arange(6.0).reshape(2, 3), b=np.array(1.5))
    assert a.unflatten(a.flatten()) == a
    assert a.prefixed("delta").unprefixed("delta") == a
    with pytest.raises(ValidationError, match="appear in both"):
        a.merged(a)
    with pytest.raises(ValidationError, match="expected \\(7,\\)"):
        a.unflatten(np.zeros(3))


def test_object_arrays_and_bad_names_are_refused() -> None:
    with pytest.raises(ValidationError, match="dtype object"):
        rec(w=np.array([{}, 1], dtype=object))
    with pytest.raises(ValidationError, match="non-empty strings"):
        ArrayRecord({"": np.zeros(1)})
    with pytest.raises(ValidationError, match="dtype object"):
        ArrayRecord({"w": np.array([{}, 1], dtype=object)}, copy=False)


def test_a_record_without_copies_holds_its_arrays_read_only() -> None:
    mine = np.arange(4.0)
    relayed = np.frombuffer(b"key bytes", dtype=np.uint8)  # read-only already
    record = ArrayRecord({"w": mine, "k": relayed, "l": [1, 2]}, copy=False)
    assert record["w"] is mine and record["k"] is relayed  # the same arrays, no copies
    assert not mine.flags.writeable and not relayed.flags.writeable
    assert record["l"].dtype.kind == "i" and not record["l"].flags.writeable  # converted


@pytest.mark.parametrize("where", [0, 1_500_000, -1])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite_finds_one_bad_value_in_a_large_array(where: int, bad: float) -> None:
    """Large arrays are checked in blocks (no boolean temporary the size of the model)."""
    assert rec(w=np.zeros((2_000, 1_000), dtype=np.float32)).all_finite()
    values = np.zeros((2_000, 1_000), dtype=np.float32)
    values.reshape(-1)[where] = bad
    assert not rec(w=values).all_finite()
    assert not ArrayRecord({"w": values.T}, copy=False).all_finite()  # not contiguous
    assert rec(i=np.ones(3_000_000, dtype=np.int64), s=np.float32(1)).all_finite()


def test_a_finite_dot_product_proves_finiteness_and_an_infinite_one_is_checked_closer() -> None:
    from fedcare.records.arrays import surely_finite

    values = np.linspace(-5, 5, 200_000, dtype=np.float32)
    assert surely_finite(values) and rec(w=values).all_finite()
    for bad in (np.nan, np.inf, -np.inf):
        spoiled = values.copy()
        spoiled[123_457] = bad
        assert not surely_finite(spoiled) and not rec(w=spoiled).all_finite()
    large = np.full(200_000, 3e38, dtype=np.float32)  # finite, but its squares overflow
    assert not surely_finite(large) and rec(w=large).all_finite()
    assert not surely_finite(values[::2])  # not contiguous: not tried
    assert rec(w=values[::2]).all_finite() and rec(w=np.arange(5)).all_finite()
    assert not rec(w=np.array([1, np.nan], dtype=np.float16)).all_finite()
