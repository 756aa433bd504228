"""DP mechanisms as pure functions: the Gaussian mechanism and its calibration.

Randomness is always injected (a ``numpy.random.Generator``); nothing here draws from a global
RNG or falls back to a default seed, and inputs are never changed: noised arrays are new
records. In simulation the generator comes from the study seed; in deployment the caller
passes one seeded from the operating system's entropy (:func:`system_rng`).

The Gaussian mechanism releases ``f(D) + N(0, sigma^2 I)`` for a query ``f`` of L2
sensitivity ``C`` (the clip norm); its privacy depends only on the *noise multiplier*
``z = sigma / C``, which is what the accountant consumes.
"""

from __future__ import annotations

import math

import numpy as np

from fedcare.errors import ConfigError
from fedcare.records.arrays import ArrayRecord

__all__ = [
    "add_gaussian_noise",
    "check_noise_multiplier",
    "check_positive",
    "noise_multiplier_from_std",
    "noise_std",
    "system_rng",
]


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """``value`` as a float if finite and > 0 (>= 0 with ``allow_zero``); else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    ok = value >= 0 if allow_zero else value > 0
    if not ok or not math.isfinite(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_noise_multiplier(value: float) -> float:
    """A noise multiplier (``>= 0``; 0 means no noise and no privacy)."""
    return check_positive("noise_multiplier", value, allow_zero=True)


def noise_std(noise_multiplier: float, clip_norm: float) -> float:
    """The Gaussian noise standard deviation ``z * C`` for sensitivity ``clip_norm``."""
    return check_noise_multiplier(noise_multiplier) * check_positive("clip_norm", clip_norm)


def noise_multiplier_from_std(std: float, clip_norm: float) -> float:
    """The noise multiplier ``sigma / C`` of noise ``std`` on a query of sensitivity ``C``."""
    return check_positive("std", std, allow_zero=True) / check_positive("clip_norm", clip_norm)


def add_gaussian_noise(arrays: ArrayRecord, std: float, rng: np.random.Generator) -> ArrayRecord:
    """A new record: ``arrays`` plus independent ``N(0, std^2)`` noise on every entry.

    Noise is drawn in float64 and added before casting back to each array's dtype. Arrays are
    visited in the record's order, so the same generator state gives the same noise.

    Raises
    ------
    ConfigError
        If ``std`` is negative or not finite.
    """
    std = check_positive("std", std, allow_zero=True)
    out: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        noise = rng.normal(0.0, std, size=value.shape) if std > 0 else 0.0
        out[name] = (np.asarray(value, dtype=np.float64) + noise).astype(value.dtype)
    return ArrayRecord(out, copy=False)


def system_rng() -> np.random.Generator:
    """A generator whose uniforms, Gaussians and Laplaces come from the OS CSPRNG.

    For deployment, where nobody (coordinator included) may know the noise (see
    :class:`fedcare.privacy.system_random.SystemRandom`). Simulation passes a generator derived
    from the study seed instead, so runs are reproducible.
    """
    from fedcare.privacy.system_random import SystemRandom

    return SystemRandom()
