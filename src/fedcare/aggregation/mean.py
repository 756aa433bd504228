"""Streaming (weighted) mean of contributions, in bounded memory.

Memory: one float64 accumulator per array (twice a float32 model; on disk, memory-mapped, under
a memory budget: :func:`fedcare.aggregation.blockwise.spill_to`) plus one block
(:data:`fedcare.aggregation.blockwise.BLOCK` elements) of temporaries, whatever the number of
sites and the size of a layer. Each contribution is added block by block (``acc += w * block``),
and a memory-mapped reply's pages are released as soon as a block is added. At the end each
accumulator is divided and converted to the template's dtype block by block, its pages handed
back as the result grows, and freed before the next array's. Every element goes through the
same operations as the whole-array formula ``(sum_i w_i * x_i) / sum_i w_i`` in float64, so
the result is bitwise the same.

Bounded in this sense: :class:`WeightedMean`, :class:`fedcare.aggregation.validate.ValidateUpdates`
and the plain server SGD step (:mod:`fedcare.strategy.server_opt`). Not bounded (whole-array
temporaries, and all contributions held at once where the method needs them): the coordinate
median, the trimmed mean and Krum (:mod:`fedcare.aggregation._stack` stacks every update), norm
bounding and adaptive clipping (a scaled copy of each clipped update), DP noise, compression,
secure and encrypted sums, and the adaptive server optimizers (Adam, Yogi, Adagrad, momentum).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.aggregation.blockwise import (
    blocks,
    discard,
    discard_after,
    flat,
    offload,
    owns_mapping,
    release_pages,
    zeros,
)
from fedcare.errors import AggregationError
from fedcare.records.arrays import ArrayRecord

__all__ = ["MeanState", "WeightedMean"]

#: Elements per product ``weight * block`` (512 KiB of float32): it is added to the sums while
#: still in the CPU's cache, instead of a block-sized temporary written out and read back.
CACHE_BLOCK = 1 << 17


@dataclass(frozen=True)
class MeanState:
    template: ArrayRecord


def add_scaled(
    acc: np.ndarray, weight: float, arr: np.ndarray, scratch: dict[np.dtype, np.ndarray]
) -> None:
    """``acc += weight * arr`` block by block (``acc`` 1-D float64, ``arr`` of the same size).

    The product has the dtype of ``weight * arr`` (a Python float does not widen a float32
    array), exactly as in the whole-array expression; ``scratch`` keeps one buffer of
    :data:`CACHE_BLOCK` elements per product dtype between calls. Element-wise operations
    only, so the sums are bitwise those of ``acc += weight * arr`` whatever the block sizes.
    """
    values = flat(arr)
    product = np.multiply(values[:0], weight).dtype
    size = min(CACHE_BLOCK, values.size)
    buffer = scratch.get(product)
    if buffer is None or buffer.size < size:
        buffer = scratch[product] = np.empty(size, dtype=product)
    for part in blocks(values.size):
        for at in range(part.start, part.stop, CACHE_BLOCK):  # the product stays in cache
            end = min(at + CACHE_BLOCK, part.stop)
            tmp = buffer[: end - at]
            np.multiply(values[at:end], weight, out=tmp)
            np.add(acc[at:end], tmp, out=acc[at:end])
        release_pages(values, part)
        offload(acc, part)  # a spilled accumulator (a memory budget) stays on disk


def divided(acc: np.ndarray, total: float, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``(acc / total).astype(dtype).reshape(shape)``, one block of ``acc`` at a time (``acc``,
    from :func:`~fedcare.aggregation.blockwise.zeros`, is spent).

    The result is written into ``acc``'s own memory from its start (a float32 result takes
    the first half of the float64 sums: block ``k`` is written over blocks already read), and
    the pages past it are handed back, so the division needs no memory of its own: a spilled
    accumulator (a memory budget) leaves the result on disk too. An accumulator that is not
    its own mapping gets a new array, its blocks handed back as the result grows.
    """
    dtype = np.dtype(dtype)
    if dtype.itemsize > acc.itemsize or not owns_mapping(acc):
        return _divided_apart(acc, total, shape, dtype)
    out = acc.view(np.uint8)[: acc.size * dtype.itemsize].view(dtype)
    for part in blocks(acc.size):
        block = acc[part]
        block /= total
        out[part] = block  # overlaps only blocks already read (numpy buffers an overlap)
        release_pages(out, part)  # spilled (a memory budget): the result stays on disk
    discard_after(acc, acc.size * dtype.itemsize)
    return out.reshape(shape)


def _divided_apart(
    acc: np.ndarray, total: float, shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    out = np.empty(acc.size, dtype=dtype)
    for part in blocks(acc.size):
        block = acc[part]
        block /= total
        out[part] = block
        discard(acc, part)  # the sums shrink as the result grows
    return out.reshape(shape)


class WeightedMean(Aggregator[MeanState]):
    """The mean of contributions, weighted by each contribution's weight (or unweighted).

    Sums are accumulated in float64 one contribution at a time and block by block, so memory is
    the accumulator (one model in float64) plus a bounded buffer, whatever the number of sites;
    no reference to a contribution is kept once it is added. The result has the template's
    dtypes and is bitwise the whole-array ``(sum_i w_i * x_i) / sum_i w_i`` in float64.
    """

    def __init__(self, *, weighted: bool = True) -> None:
        self.weighted = weighted

    def init(self, template: ArrayRecord) -> MeanState:
        return MeanState(template=template)

    def _accumulate(
        self, template: ArrayRecord, contributions: Iterator[Contribution]
    ) -> tuple[dict[str, np.ndarray], float, list[str]]:
        sums: dict[str, np.ndarray] = {}
        scratch: dict[np.dtype, np.ndarray] = {}
        total = 0.0
        sites: list[str] = []
        for c in contributions:
            template.check_structure(c.arrays, what=f"update from site {c.site_id!r}")
            if not sites:  # made for the first update, which writes every page: given at once
                sums = {k: zeros(v.size, populate=True) for k, v in template.items()}
            w = float(c.weight) if self.weighted else 1.0
            for k, acc in sums.items():
                add_scaled(acc, w, c.arrays[k], scratch)  # in place on our own accumulator only
            total += w
            sites.append(c.site_id)
            del c  # not held while the next one is read
        return sums, total, sites

    def update(
        self, state: MeanState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, MeanState, Measurements]:
        sums, total, sites = self._accumulate(state.template, iter(contributions))
        if not sites:
            raise AggregationError("no contributions to aggregate")
        if total <= 0:
            raise AggregationError(f"total weight of contributions from {sites} is {total}")
        out: dict[str, np.ndarray] = {}
        for k, v in state.template.items():
            out[k] = divided(sums.pop(k), total, v.shape, v.dtype)  # frees that accumulator
        measurements: Measurements = {
            "num_contributions": len(sites),
            "total_weight": total,
            "contributing_sites": sites,
        }
        return ArrayRecord(out, copy=False), state, measurements
