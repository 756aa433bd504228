"""Named arrays: the unit in which model parameters and updates travel.

An :class:`ArrayRecord` is an immutable, ordered mapping from parameter names to numpy arrays.
Arithmetic returns new records and never touches its operands (STYLE.md rule 12).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from fedcare.errors import ValidationError

__all__ = ["ArrayRecord", "surely_finite"]


class ArrayRecord(Mapping[str, np.ndarray]):
    """An immutable ordered mapping ``name -> np.ndarray``.

    Arrays are copied on construction and marked read-only, so a record can be shared between
    the strategy, the grid and the sites without anyone changing it under another's feet.
    """

    __slots__ = ("_arrays",)

    def __init__(self, arrays: Mapping[str, Any] | None = None, *, copy: bool = True) -> None:
        items: dict[str, np.ndarray] = {}
        for name, value in (arrays or {}).items():
            if not isinstance(name, str) or not name:
                raise ValidationError(f"array names must be non-empty strings, got {name!r}")
            if copy:
                arr = np.array(value, copy=True)
            else:  # an ndarray as it is (asarray would give the same), anything else converted
                arr = value if type(value) is np.ndarray else np.asarray(value)
            if arr.dtype.kind == "O":  # ``dtype == object``, without building a dtype to compare
                raise ValidationError(
                    f"array {name!r} has dtype object; only numeric arrays travel"
                )
            if arr.flags.writeable:  # relayed records hold read-only arrays already
                arr.flags.writeable = False
            items[name] = arr
        self._arrays = items

    # Mapping protocol -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._arrays.items())
        return f"ArrayRecord({{{inner}}})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArrayRecord) or list(self) != list(other):
            return False
        return all(np.array_equal(self[k], other[k]) for k in self)

    __hash__ = None  # type: ignore[assignment]

    # Shape information ------------------------------------------------------------------------
    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self._arrays.items()}

    @property
    def num_params(self) -> int:
        return int(sum(v.size for v in self._arrays.values()))

    @property
    def nbytes(self) -> int:
        return int(sum(v.nbytes for v in self._arrays.values()))

    def same_structure(self, other: Mapping[str, np.ndarray]) -> bool:
        """True when ``other`` has the same names, in the same order, with the same shapes."""
        return list(self) == list(other) and all(
            tuple(self[k].shape) == tuple(np.shape(other[k])) for k in self
        )

    def check_structure(self, other: Mapping[str, np.ndarray], *, what: str = "update") -> None:
        """Raise :class:`ValidationError` naming the first mismatch between self and ``other``."""
        missing = [k for k in self if k not in other]
        extra = [k for k in other if k not in self]
        if missing or extra:
            raise ValidationError(f"{what} has missing arrays {missing} and unexpected {extra}")
        for k in self:
            got = tuple(np.shape(other[k]))
            if got != tuple(self[k].shape):
                raise ValidationError(
                    f"{what} array {k!r} has shape {got}, expected {tuple(self[k].shape)}"
                )

    # Arithmetic (all return new records) -------------------------------------------------------
    def map(self, fn: Any) -> ArrayRecord:
        return ArrayRecord({k: fn(v) for k, v in self._arrays.items()}, copy=False)

    def zip_map(self, other: Mapping[str, np.ndarray], fn: Any) -> ArrayRecord:
        self.check_structure(other, what="operand")
        return ArrayRecord({k: fn(v, other[k]) for k, v in self._arrays.items()}, copy=False)

    def __add__(self, other: Mapping[str, np.ndarray]) -> ArrayRecord:
        return self.zip_map(other, np.add)

    def __sub__(self, other: Mapping[str, np.ndarray]) -> ArrayRecord:
        return self.zip_map(other, np.subtract)

    def scale(self, factor: float) -> ArrayRecord:
        return self.map(lambda v: v * factor)

    def skeleton(self) -> ArrayRecord:
        """This record's names, shapes and dtypes, holding no data.

        Each array is a read-only zero view of one element (``np.broadcast_to``), so a
        template kept all study (an aggregator's) costs nothing however large the model.
        """
        return ArrayRecord(
            {k: np.broadcast_to(np.zeros((), v.dtype), v.shape) for k, v in self._arrays.items()},
            copy=False,
        )

    def zeros_like(self) -> ArrayRecord:
        return self.map(np.zeros_like)

    def astype(self, dtype: Any) -> ArrayRecord:
        return self.map(lambda v: v.astype(dtype))

    def sq_norm(self) -> float:
        return float(sum(float(np.vdot(v, v)) for v in self._arrays.values()))

    def norm(self) -> float:
        return float(np.sqrt(self.sq_norm()))

    def all_finite(self) -> bool:
        """True when no array holds NaN or an infinity (checked in bounded blocks)."""
        return all(_all_finite(v) for v in self._arrays.values())

    def prefixed(self, prefix: str) -> ArrayRecord:
        """A record whose names are ``prefix + '/' + name``."""
        return ArrayRecord({f"{prefix}/{k}": v for k, v in self._arrays.items()}, copy=False)

    def unprefixed(self, prefix: str) -> ArrayRecord:
        """The arrays whose names start with ``prefix + '/'``, with the prefix removed."""
        head = prefix + "/"
        return ArrayRecord(
            {k[len(head) :]: v for k, v in self._arrays.items() if k.startswith(head)}, copy=False
        )

    def merged(self, other: Mapping[str, np.ndarray]) -> ArrayRecord:
        """A record with the arrays of both; names must not collide."""
        clash = [k for k in other if k in self._arrays]
        if clash:
            raise ValidationError(f"cannot merge records: names {clash} appear in both")
        return ArrayRecord({**self._arrays, **dict(other)}, copy=False)

    def flatten(self) -> np.ndarray:
        """All arrays concatenated into one float64 vector, in record order."""
        if not self._arrays:
            return np.zeros(0)
        return np.concatenate([np.ravel(v).astype(np.float64) for v in self._arrays.values()])

    def unflatten(self, vector: np.ndarray) -> ArrayRecord:
        """Inverse of :meth:`flatten`, using this record's names, shapes and dtypes."""
        vector = np.asarray(vector)
        if vector.shape != (self.num_params,):
            raise ValidationError(
                f"vector has shape {vector.shape}, expected ({self.num_params},) for this record"
            )
        out: dict[str, np.ndarray] = {}
        offset = 0
        for k, v in self._arrays.items():
            out[k] = vector[offset : offset + v.size].reshape(v.shape).astype(v.dtype)
            offset += v.size
        return ArrayRecord(out, copy=False)


#: Elements per block of :meth:`ArrayRecord.all_finite`: its temporary stays at 64 kB.
_FINITE_BLOCK = 1 << 16


def surely_finite(v: np.ndarray) -> bool:
    """True when ``v`` (C-contiguous float32 or float64) has a finite dot product with itself.

    That implies every element is finite: a NaN or an infinity makes the sum of squares NaN
    or infinite, and no later term brings it back. One BLAS pass without a temporary, so much
    cheaper than ``np.isfinite``. False proves nothing (large finite values can overflow the
    sum, other dtypes are not tried): the caller then checks element by element.
    """
    if v.dtype not in _DOT_DTYPES or not v.flags.c_contiguous:
        return False
    flat = v.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow only means: look closer
        return bool(np.isfinite(np.dot(flat, flat)))


_DOT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _all_finite(v: np.ndarray) -> bool:
    """``np.isfinite(v).all()`` without a boolean temporary the size of ``v``."""
    if surely_finite(v):
        return True
    if v.size <= _FINITE_BLOCK or v.ndim == 0:
        return bool(np.isfinite(v).all())
    rows = max(1, _FINITE_BLOCK * v.shape[0] // v.size)
    return all(bool(np.isfinite(v[i : i + rows]).all()) for i in range(0, v.shape[0], rows))
