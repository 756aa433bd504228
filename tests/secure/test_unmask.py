from collections.abc import Callable, Iterator

import numpy as np
import pytest

from fedcare.errors import ValidationError
from fedcare.secure.secagg.prg import prg_uint64
from fedcare.secure.secagg.unmask import MaskJob, add_vectors, apply_masks, default_workers


def _jobs(count: int) -> list[MaskJob]:
    seeds = [bytes([i]) * 32 for i in range(count)]
    return [(s, i % 3 != 0) for i, s in enumerate(seeds)]


def _reference(start: np.ndarray, jobs: list[MaskJob]) -> np.ndarray:
    """One mask after the other, each freshly expanded: the loop apply_masks replaces."""
    total = start.copy()
    for seed, add in jobs:
        mask = prg_uint64(seed, total.size)
        total = total + mask if add else total - mask
    return total


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
@pytest.mark.parametrize("count", [0, 1, 5, 17])
def test_threads_give_the_one_thread_sum_exactly(workers: int, count: int) -> None:
    start = np.random.default_rng(count).integers(0, 2**63, 2001, dtype=np.uint64) * np.uint64(2)
    jobs = _jobs(count)
    got = start.copy()
    apply_masks(got, jobs, workers=workers)
    assert np.array_equal(got, _reference(start, jobs))
    if count:
        assert not np.array_equal(got, start)
    undo = [(seed, not add) for seed, add in jobs]
    apply_masks(got, undo, workers=workers)
    assert np.array_equal(got, start)  # removing the same masks restores the input


def test_bad_vector_or_workers_are_refused() -> None:
    with pytest.raises(ValidationError, match="1-d uint64"):
        apply_masks(np.zeros(4, dtype=np.int64), _jobs(2))
    with pytest.raises(ValidationError, match="workers must be >= 1, got 0"):
        apply_masks(np.zeros(4, dtype=np.uint64), _jobs(2), workers=0)
    assert 1 <= default_workers() <= 4


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("count", [0, 3, 9, 30])
def test_add_vectors_is_the_wrapping_sum_on_any_number_of_threads(workers: int, count: int) -> None:
    rng = np.random.default_rng(count)
    vectors = [rng.integers(0, 2**64 - 1, 501, dtype=np.uint64) for _ in range(count)]
    start = rng.integers(0, 2**64 - 1, 501, dtype=np.uint64)
    want = start.copy()
    for vec in vectors:  # one after the other, wrapping mod 2^64
        want = want + vec
    got = start.copy()
    add_vectors(got, vectors, workers=workers)
    assert np.array_equal(got, want)
    with pytest.raises(ValidationError, match="1-d uint64"):
        add_vectors(np.zeros((2, 2), dtype=np.uint64), vectors, workers=workers)


@pytest.mark.parametrize("workers", [1, 3])
def test_errors_of_workers_and_of_the_job_source_reach_the_caller(workers: int) -> None:
    bad = [*_jobs(4), (b"short", True), *_jobs(3)]
    with pytest.raises(ValidationError, match="PRG seed has 5 bytes"):
        apply_masks(np.zeros(10, dtype=np.uint64), bad, workers=workers)

    def failing() -> Iterator[MaskJob]:
        yield from _jobs(3)
        raise ValidationError("key agreement failed")

    with pytest.raises(ValidationError, match="key agreement failed"):
        apply_masks(np.zeros(10, dtype=np.uint64), failing(), workers=workers)


def test_jobs_may_come_from_a_generator() -> None:
    jobs = _jobs(9)
    got = np.zeros(300, dtype=np.uint64)
    apply_masks(got, iter(jobs), workers=2)
    assert np.array_equal(got, _reference(np.zeros(300, dtype=np.uint64), jobs))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_seed_may_be_derived_on_the_thread_that_expands_it(workers: int) -> None:
    jobs = _jobs(7)
    calls: list[int] = []

    def deferred(seed: bytes, i: int) -> Callable[[], bytes]:
        def derive() -> bytes:
            calls.append(i)
            return seed

        return derive

    lazy: list[MaskJob] = [(deferred(s, i), add) for i, (s, add) in enumerate(jobs)]
    got = np.zeros(400, dtype=np.uint64)
    apply_masks(got, lazy, workers=workers)
    assert np.array_equal(got, _reference(np.zeros(400, dtype=np.uint64), jobs))
    assert sorted(calls) == list(range(7))  # each seed derived once

    def broken() -> bytes:
        raise ValidationError("bad X25519 public key")

    with pytest.raises(ValidationError, match="bad X25519"):
        apply_masks(np.zeros(10, dtype=np.uint64), [*jobs[:3], (broken, True)], workers=workers)
