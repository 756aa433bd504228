"""Fixed-point encoding for secure sums: clip, stochastic rounding, arithmetic mod 2^64.

A value ``x`` is clipped to ``[-c, c]`` and mapped to ``(x + c) / step`` with
``step = 2c / (2^b - 1)``, then rounded stochastically to one of the ``2^b`` integer levels
(up with probability equal to the fractional part, so the encoding is unbiased). Levels are
uint64 and masks are added mod 2^64; the sum of ``n`` encodings is below ``n (2^b - 1)``, so it
is exact mod 2^64 while ``n (2^b - 1) < 2^64`` (the headroom check).

Error bound (per coordinate, inputs inside ``[-c, c]``): each site's rounding moves its value by
less than one ``step``, and converting the integer sum back to float64 loses at most one ulp,
so ``|decoded_sum - true_sum| <= n * step + n * (2^b - 1) * step * 2^-52`` — see
:func:`error_bound`. Inputs outside ``[-c, c]`` are clipped first (the bound is then relative
to the clipped inputs). Defaults (``c = 2^20``, ``b = 44``) give ``step = 2^-23``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcare.errors import ConfigError, ValidationError
from fedcare.secure.secagg.keys import Entropy

__all__ = ["QuantSpec", "dequantize_sum", "error_bound", "quantize"]

_TWO64 = float(2**64)


@dataclass(frozen=True)
class QuantSpec:
    """Clip bound ``clip`` (c) and bits per value ``bits`` (b, 1..62)."""

    clip: float = float(2**20)
    bits: int = 44

    def __post_init__(self) -> None:
        if not (self.clip > 0 and np.isfinite(self.clip)):
            raise ConfigError(
                f"secure aggregation clip must be a finite number > 0, got {self.clip!r}"
            )
        if not 1 <= self.bits <= 62:
            raise ConfigError(f"secure aggregation bits must be in [1, 62], got {self.bits!r}")

    @property
    def levels(self) -> int:
        return int(2**self.bits - 1)

    @property
    def step(self) -> float:
        return 2.0 * self.clip / self.levels

    def max_sites(self) -> int:
        """Most sites whose encodings sum without wrapping mod 2^64."""
        return int((2**64 - 1) // self.levels)


def quantize(x: np.ndarray, spec: QuantSpec, entropy: Entropy) -> np.ndarray:
    """``x`` (float) as uint64 levels in ``[0, 2^b - 1]``, stochastically rounded."""
    values = np.asarray(x, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValidationError("cannot quantize NaN or infinite values")
    # the same arithmetic as (clip(x) + c) / step, floor, low + (u < scaled - low), clip, in
    # place on two temporaries instead of seven (the same values, bit for bit)
    scaled = np.clip(values, -spec.clip, spec.clip, out=np.empty_like(values))
    scaled += spec.clip
    scaled /= spec.step
    low = np.floor(scaled, out=np.empty_like(scaled))
    scaled -= low  # the fractional part
    u = np.frombuffer(entropy(8 * values.size), dtype="<u8").reshape(values.shape) / _TWO64
    low += u < scaled
    return np.clip(low, 0, spec.levels, out=low).astype(np.uint64)


def dequantize_sum(total: np.ndarray, num_sites: int, spec: QuantSpec) -> np.ndarray:
    """The float64 sum of ``num_sites`` inputs from the uint64 sum of their encodings."""
    if not 1 <= num_sites <= spec.max_sites():
        raise ValidationError(
            f"num_sites={num_sites} outside [1, {spec.max_sites()}] for {spec.bits}-bit levels"
        )
    return np.asarray(total, dtype=np.uint64).astype(np.float64) * spec.step - num_sites * spec.clip


def error_bound(spec: QuantSpec, num_sites: int) -> float:
    """Largest per-coordinate ``|decoded_sum - sum of clipped inputs|`` for ``num_sites``."""
    return num_sites * spec.step * (1.0 + spec.levels * 2.0**-52) + num_sites * spec.clip * 2.0**-52
