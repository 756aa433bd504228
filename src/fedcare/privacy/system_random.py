"""Noise nobody can reproduce: a numpy ``Generator`` whose draws that protect privacy come from
the operating system's CSPRNG (``os.urandom``), as STYLE.md asks outside simulation.

``random`` (uniforms: Poisson sampling), ``standard_normal`` / ``normal`` (Gaussian noise, by the
Box–Muller transform) and ``laplace`` (inverse CDF) read fresh OS random bytes on every call, so
no generator state exists that an observer of the outputs could recover. Every other method
(``permutation``, ``integers``, ...: batch order, not privacy) uses a PCG64 seeded from the same
source. Simulation passes a seeded generator instead, so its runs are reproducible.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["SystemRandom"]

_MANTISSA = float(2**-53)


def _uniform_open(count: int) -> np.ndarray:
    """``count`` floats uniform on (0, 1) (53 random bits each, zero excluded)."""
    words = np.frombuffer(os.urandom(8 * count), dtype="<u8")
    return ((words >> np.uint64(11)).astype(np.float64) + 0.5) * _MANTISSA


def _shape(size: Any, *params: Any) -> tuple[int, ...]:
    if size is None:
        return tuple(np.broadcast_shapes(*(np.shape(p) for p in params)))
    if isinstance(size, int | np.integer):
        return (int(size),)
    return tuple(int(s) for s in size)


def _result(values: np.ndarray, shape: tuple[int, ...]) -> Any:
    return float(values.reshape(())) if shape == () else values.reshape(shape)


class SystemRandom(np.random.Generator):
    """A ``numpy.random.Generator``: uniforms, Gaussians and Laplaces from the OS CSPRNG."""

    def __init__(self) -> None:
        super().__init__(np.random.PCG64(np.random.SeedSequence()))

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        if out is not None or np.dtype(dtype) != np.float64:
            raise ValueError("SystemRandom.random draws float64 only, without out=")
        shape = _shape(size)
        return _result(_uniform_open(max(1, int(np.prod(shape)))), shape)

    def standard_normal(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        if out is not None or np.dtype(dtype) != np.float64:
            raise ValueError("SystemRandom.standard_normal draws float64 only, without out=")
        shape = _shape(size)
        count = max(1, int(np.prod(shape)))
        pairs = (count + 1) // 2
        u1, u2 = _uniform_open(pairs), _uniform_open(pairs)
        radius = np.sqrt(-2.0 * np.log(u1))
        values = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
        return _result(values[:count], shape)

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        if np.any(np.asarray(scale) < 0):
            raise ValueError("scale < 0")
        shape = _shape(size, loc, scale)
        values = np.asarray(loc) + np.asarray(scale) * np.asarray(self.standard_normal(shape))
        return _result(np.asarray(values, dtype=np.float64), shape)

    def laplace(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        if np.any(np.asarray(scale) < 0):
            raise ValueError("scale < 0")
        shape = _shape(size, loc, scale)
        u = _uniform_open(max(1, int(np.prod(shape)))).reshape(shape) - 0.5
        values = np.asarray(loc) - np.asarray(scale) * np.sign(u) * np.log1p(-2.0 * np.abs(u))
        return _result(np.asarray(values, dtype=np.float64), shape)
