"""Adding and removing many PRG masks of one length, on several threads.

The coordinator's last step removes hundreds of masks from the masked sum (each survivor's
self-mask, each dropped site's pairwise masks with its surviving neighbours): one AES
expansion and one pass over the vector each. ``cryptography`` and numpy release the GIL for
both, so :func:`apply_masks` shares the masks among threads, the calling thread one of them,
each with its own buffer; the calling thread adds into the target, the others into partial
sums added at the end. :func:`add_vectors` sums the masked inputs the same way. Addition mod
2^64 is associative and commutative, so the result is exactly what one thread adding the masks
in order gives. Threads pay off only for enough work (the coordinator asks for them from about
8M values on: 100 sites x 100k parameters, not 10 sites).

A pairwise mask's seed comes from a key agreement (X25519 and HKDF), which holds the GIL. A job
may therefore carry a function that derives its seed: the calling thread derives them all, one
after the other, while the other threads expand the masks whose seeds are known (the survivors'
self-masks), then joins them. Keys are derived as one batch, not each just before its mask: on
one thread, alternating key agreement with AES measured ~10 % slower than the batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from queue import Empty, SimpleQueue
from threading import Thread

import numpy as np

from fedcare.errors import ValidationError
from fedcare.secure.secagg.prg import MaskBuffer

__all__ = ["MaskJob", "add_vectors", "apply_masks", "default_workers"]

#: ``(seed, add)``: the mask is ``prg(seed)``, added if ``add`` else subtracted. ``seed`` may be
#: a function returning the seed (a key agreement), called on the thread that expands it.
MaskJob = tuple[bytes | Callable[[], bytes], bool]


def default_workers() -> int:
    """Threads for :func:`apply_masks`: the machine's cores, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def _check_target(total: np.ndarray, workers: int, what: str) -> None:
    if total.dtype != np.uint64 or total.ndim != 1:
        raise ValidationError(f"{what} to a 1-d uint64 vector, got {total.dtype} {total.shape}")
    if workers < 1:
        raise ValidationError(f"workers must be >= 1, got {workers}")


def apply_masks(total: np.ndarray, jobs: Iterable[MaskJob], *, workers: int = 1) -> None:
    """``total += sum(+-prg(seed))`` mod 2^64, in place, over ``workers`` threads (the calling
    thread included).

    The calling thread first derives the seeds given as functions, one after the other, while
    the other threads expand the masks whose seeds are given; then it expands masks too.

    Raises
    ------
    ValidationError
        If ``total`` is not a one-dimensional uint64 array or ``workers`` is below 1; any error
        of a job (a bad seed, a failed key agreement) reaches the caller.
    """
    _check_target(total, workers, "masks apply")
    ready: list[tuple[bytes, bool]] = []
    deferred: list[tuple[Callable[[], bytes], bool]] = []
    for seed, add in jobs:
        if isinstance(seed, bytes):
            ready.append((seed, add))
        else:
            deferred.append((seed, add))
    workers = min(workers, len(ready) + len(deferred))
    if workers <= 1:
        # every key first: alternating key agreement with expansion measured ~10 % slower
        _apply(total, [(derive(), add) for derive, add in deferred] + ready, threads=False)
        return
    queue: SimpleQueue[tuple[bytes, bool] | None] = SimpleQueue()
    for job in ready:
        queue.put(job)
    partials = [np.zeros(total.size, dtype=np.uint64) for _ in range(workers - 1)]
    errors: list[BaseException] = []

    def work(acc: np.ndarray) -> None:
        try:
            _apply(acc, iter(queue.get, None), threads=True)
        except BaseException as err:  # re-raised on the calling thread
            errors.append(err)
            while queue.get() is not None:  # skip the rest, up to this thread's stop mark
                pass

    threads = [Thread(target=work, args=(acc,), name="secagg-unmask") for acc in partials]
    for thread in threads:
        thread.start()
    try:
        for derive, add in deferred:  # key agreement holds the GIL: one thread does it all
            queue.put((derive(), add))
    except BaseException:
        _drain(queue)  # what is left is not worth expanding
        _stop(queue, threads)
        raise
    queue.put(None)  # the calling thread's stop mark; each thread takes one, after every job
    _stop(queue, threads, join=False)
    work(total)
    _stop(queue, threads, marks=False)
    if errors:
        raise errors[0]
    for partial in partials:
        np.add(total, partial, out=total)  # wraps mod 2^64, as intended


def _stop(
    queue: SimpleQueue[tuple[bytes, bool] | None],
    threads: Sequence[Thread],
    *,
    marks: bool = True,
    join: bool = True,
) -> None:
    """A stop mark in ``queue`` for each thread (``marks``), then wait for them (``join``)."""
    for _ in threads if marks else ():
        queue.put(None)
    for thread in threads if join else ():
        thread.join()


def _drain(queue: SimpleQueue[tuple[bytes, bool] | None]) -> None:
    try:
        while True:
            queue.get_nowait()
    except Empty:
        pass


def _apply(acc: np.ndarray, jobs: Iterable[tuple[bytes, bool]], *, threads: bool) -> None:
    masks = MaskBuffer(acc.size, one_call=threads)  # one per thread: nothing allocated per mask
    for seed, add in jobs:
        (np.add if add else np.subtract)(acc, masks.expand(seed), out=acc)


def add_vectors(total: np.ndarray, vectors: Sequence[np.ndarray], *, workers: int = 1) -> None:
    """``total += sum(vectors)`` mod 2^64, in place, over ``workers`` threads (the calling
    thread included).

    Raises
    ------
    ValidationError
        If ``total`` is not a one-dimensional uint64 array or ``workers`` is below 1.
    """
    _check_target(total, workers, "vectors add")
    workers = min(workers, len(vectors) // 4)  # a thread pays off from a few vectors on
    if workers <= 1:
        _add_all(total, vectors)
        return
    parts = [vectors[i::workers] for i in range(workers)]

    def part_sum(part: Sequence[np.ndarray]) -> np.ndarray:
        acc = np.zeros(total.size, dtype=np.uint64)
        _add_all(acc, part)
        return acc

    with ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="secagg-sum") as pool:
        futures = [pool.submit(part_sum, part) for part in parts[1:]]
        _add_all(total, parts[0])
        partials = [future.result() for future in futures]
    _add_all(total, partials)


def _add_all(acc: np.ndarray, vectors: Iterable[np.ndarray]) -> None:
    for vec in vectors:
        np.add(acc, vec, out=acc)  # wraps mod 2^64, as intended
