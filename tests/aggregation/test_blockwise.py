"""Blockwise helpers: same answers as the whole-array expressions, pages released invisibly."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

from fedcare.aggregation.blockwise import (
    BLOCK,
    NORM_PIECE,
    all_finite,
    blocks,
    discard,
    flat,
    norm,
    release_pages,
    sq_norm,
    zeros,
)
from fedcare.records.arrays import ArrayRecord


@pytest.mark.parametrize(
    ("size", "block"), [(0, 4), (1, 4), (4, 4), (5, 4), (11, 4), (2 * BLOCK + 3, BLOCK)]
)
def test_blocks_cover_the_range_once_in_order(size: int, block: int) -> None:
    parts = list(blocks(size, block))
    assert all(0 < p.stop - p.start <= block for p in parts)
    covered = np.concatenate([np.arange(size)[p] for p in parts]) if parts else np.arange(0)
    np.testing.assert_array_equal(covered, np.arange(size))


def test_all_finite_finds_a_nan_or_inf_in_the_last_partial_block() -> None:
    values = np.ones(BLOCK + 5, dtype=np.float32)
    assert all_finite(values)
    values[-1] = np.inf
    assert not all_finite(values)
    values[-1] = np.nan
    assert not all_finite(values.reshape(-1, 1))
    assert all_finite(np.arange(7))  # integers are always finite
    assert not all_finite(np.array(np.nan))  # 0-d


def test_sq_norm_is_the_float64_sum_of_squares() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(BLOCK // 1000 + 1, 1001)).astype(np.float32)
    exact = float(np.sum(values.astype(np.float64) ** 2))
    assert sq_norm(values) == pytest.approx(exact, rel=1e-12)
    record = ArrayRecord({"a": values, "b": np.array([3.0, 4.0])}, copy=False)
    assert norm(record) == pytest.approx(np.sqrt(exact + 25.0), rel=1e-12)
    assert sq_norm(np.zeros(0)) == 0.0
    assert sq_norm(np.array([3 + 4j, 1.0])) == 26.0  # |z|^2


def test_flat_is_a_view_of_a_contiguous_array() -> None:
    values = np.arange(12.0).reshape(3, 4)
    assert np.shares_memory(flat(values), values)
    np.testing.assert_array_equal(flat(values.T), values.T.ravel())  # copied, same order


def _file(tmp_path: Path, values: np.ndarray) -> Path:
    path = tmp_path / "reply.bin"
    values.tofile(path)
    return path


def test_released_pages_of_a_read_only_mapping_read_back_the_same(tmp_path: Path) -> None:
    values = np.random.default_rng(0).normal(size=3 * mmap.PAGESIZE + 17)
    path = _file(tmp_path, values)
    with path.open("rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        mapped = np.frombuffer(mm, dtype=np.float64)[1:]  # not page-aligned
        assert mapped.sum() == values[1:].sum()  # touch every page
        for part in blocks(mapped.size, 1000):
            release_pages(mapped, part)
        np.testing.assert_array_equal(mapped, values[1:])
        memmapped = np.memmap(path, dtype=np.float64, mode="r")
        release_pages(flat(np.asarray(memmapped)), slice(0, memmapped.size))
        np.testing.assert_array_equal(memmapped, values)
        del mapped, memmapped
        mm.close()


def test_pages_of_a_copy_on_write_mapping_or_an_ordinary_array_are_kept(tmp_path: Path) -> None:
    values = np.zeros(2 * mmap.PAGESIZE)
    private = np.memmap(_file(tmp_path, values), dtype=np.float64, mode="c")
    private[:] = 7.0  # private pages, not in the file: releasing them would lose this
    release_pages(flat(np.asarray(private)), slice(0, private.size))
    assert np.all(private == 7.0)
    ordinary = np.full(10, 2.0)
    release_pages(ordinary, slice(0, 10))
    assert np.all(ordinary == 2.0)


@pytest.mark.parametrize("block", [1000, 512, 3 * mmap.PAGESIZE // 8 + 1])
def test_discarding_converted_blocks_in_order_keeps_every_block_not_yet_read(block: int) -> None:
    size = 7 * mmap.PAGESIZE // 8 + 123
    acc = zeros(size)
    assert acc.dtype == np.float64 and acc.shape == (size,) and not acc.any()
    values = np.arange(1.0, size + 1.0)
    acc += values
    for part in blocks(size, block):
        np.testing.assert_array_equal(acc[part.start :], values[part.start :])  # unread: intact
        discard(acc, part)
    assert np.count_nonzero(acc) <= mmap.PAGESIZE // 8  # all but the last, partial page read 0
    assert zeros(0).shape == (0,)


def test_discard_leaves_ordinary_arrays_and_views_alone() -> None:
    ordinary = np.full(4096, 3.0)
    discard(ordinary, slice(0, 4096))
    assert np.all(ordinary == 3.0)
    acc = zeros(4096)
    acc += 5.0
    discard(acc[::2], slice(0, 2048))  # not a contiguous float64 view: nothing happens
    assert np.all(acc == 5.0)


def test_spilled_sums_give_the_same_mean_and_stay_out_of_the_process(tmp_path: Path) -> None:
    """Under a memory budget the float64 sums are a mapped, unlinked file whose written
    blocks leave the process: the same mean, bitwise, and no more anonymous memory."""
    from fedcare.aggregation.base import Contribution
    from fedcare.aggregation.blockwise import spill_to, zeros
    from fedcare.aggregation.mean import WeightedMean

    rng = np.random.default_rng(3)
    template = ArrayRecord({"w": np.zeros(3 * BLOCK + 17, np.float32), "b": np.zeros(5)})
    updates = [
        ArrayRecord({k: rng.normal(size=v.shape).astype(v.dtype) for k, v in template.items()})
        for _ in range(3)
    ]

    def mean() -> ArrayRecord:
        agg = WeightedMean()
        contributions = [Contribution(f"s{i}", u, weight=i + 1.0) for i, u in enumerate(updates)]
        return agg.update(agg.init(template), contributions)[0]

    in_memory = mean()
    spill_to(tmp_path / "spill", above_bytes=1 << 20)
    try:
        sums = zeros(3 * BLOCK)
        assert not sums.flags.owndata and list((tmp_path / "spill").iterdir()) == []  # unlinked
        del sums
        spilled = mean()
    finally:
        spill_to(None)
    assert all(in_memory[k].tobytes() == spilled[k].tobytes() for k in template)


def _rss_kb() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return sum(int(fields[k].split()[0]) for k in ("RssAnon", "RssFile", "RssShmem"))


def test_a_spilled_accumulator_costs_the_process_a_block(tmp_path: Path) -> None:
    from fedcare.aggregation.blockwise import spill_to, zeros
    from fedcare.aggregation.mean import add_scaled

    values = np.ones(8 * BLOCK, np.float32)  # 64 MB of float64 sums
    spill_to(tmp_path, above_bytes=0)
    try:
        sums = zeros(values.size)
        before = _rss_kb()
        add_scaled(sums, 2.0, values, {})
        grown = _rss_kb() - before
        assert grown < 2 * BLOCK * 8 // 1024 + 4096, f"{grown} kB for 64 MB of sums"
        assert float(sums[-1]) == 2.0 and float(sums.sum()) == 2.0 * values.size  # in the file
    finally:
        spill_to(None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64])
@pytest.mark.parametrize("spilled", [False, True])
def test_the_mean_is_written_into_the_sums_own_memory(
    tmp_path: Path, dtype: type, spilled: bool
) -> None:
    """``divided`` converts the float64 sums into the result in their own mapping (block k over
    blocks already read): bitwise ``(sums / total).astype(dtype)``, no new array, and the
    pages past the result are handed back."""
    from fedcare.aggregation.blockwise import spill_to, zeros
    from fedcare.aggregation.mean import divided

    n = 3 * BLOCK + 1234
    values = np.random.default_rng(5).normal(scale=100.0, size=n)
    spill_to(tmp_path if spilled else None, above_bytes=0)
    try:
        sums = zeros(n)
        sums[:] = values
        before = _rss_kb()
        out = divided(sums, 3.0, (n,), np.dtype(dtype))
        grown = _rss_kb() - before
    finally:
        spill_to(None)
    assert out.dtype == dtype and out.shape == (n,)
    assert out.tobytes() == (values / 3.0).astype(dtype).tobytes()
    assert np.shares_memory(out, sums)  # no array of its own
    assert grown < BLOCK * 8 // 1024 + 1024, f"{grown} kB more to divide {n * 8 >> 20} MB"


def test_sums_that_are_not_a_mapping_of_their_own_give_a_new_array() -> None:
    from fedcare.aggregation.mean import divided

    sums = np.arange(10, dtype=np.float64)
    out = divided(sums, 4.0, (2, 5), np.dtype(np.float32))
    assert not np.shares_memory(out, sums)
    assert out.tobytes() == (np.arange(10) / 4.0).astype(np.float32).reshape(2, 5).tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.int64, np.float16])
def test_sq_norm_with_a_reused_buffer_is_bitwise_the_one_without(dtype: type) -> None:
    rng = np.random.default_rng(11)
    scratch: dict[np.dtype, np.ndarray] = {}
    for size in (BLOCK + 777, 5, 0, 1000):  # the buffer is made once, for the largest piece
        values = (rng.normal(size=size) * 100).astype(dtype)
        assert sq_norm(values, scratch) == sq_norm(values)
    buffers = {k: id(v) for k, v in scratch.items()}
    assert all(v.size == NORM_PIECE for v in scratch.values())
    sq_norm((rng.normal(size=BLOCK) * 100).astype(dtype), scratch)
    assert {k: id(v) for k, v in scratch.items()} == buffers  # reused, not reallocated
    assert np.dtype(dtype) not in (np.float64, np.complex128) or not scratch  # no copy needed


def test_all_finite_of_large_finite_float32_whose_squares_overflow() -> None:
    values = np.full(BLOCK + 5, 3e38, dtype=np.float32)  # its float32 sum of squares is inf
    assert all_finite(values)
    values[BLOCK + 2] = -np.inf
    assert not all_finite(values)
