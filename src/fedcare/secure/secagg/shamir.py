"""Shamir t-of-n secret sharing of byte strings over the prime field GF(2^31 - 1).

A secret (e.g. a 32-byte seed or private key) is cut into 16-bit chunks, one field element
each, and every chunk gets its own random polynomial of degree ``t - 1``; all chunks are shared
at once with numpy (Horner's rule over the holders x chunks matrix). Products stay below 2^62,
so int64 arithmetic is exact. Any ``t`` shares reconstruct by Lagrange interpolation at 0;
fewer reveal nothing about the secret (each chunk is uniformly distributed given ``t - 1``
points of a random polynomial). Coefficients come from the injected ``entropy`` (CSPRNG bytes
outside simulation), reduced mod p from 64-bit words (bias below 2^-32).

:func:`reconstruct_many` reconstructs many secrets at once (the coordinator unmasking a round):
the Lagrange coefficients of every secret's points come from one vectorized pass (inverses by
Fermat's little theorem, square-and-multiply over the whole array) and the interpolation is one
array expression; it gives exactly what :func:`reconstruct` gives for each secret.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcare.errors import ValidationError
from fedcare.secure.secagg.keys import Entropy

__all__ = ["PRIME", "interpolate_many", "reconstruct", "reconstruct_many", "split"]

PRIME = 2**31 - 1


def _chunks(secret: bytes) -> np.ndarray:
    if len(secret) % 2:
        raise ValidationError(f"secret must have an even number of bytes, got {len(secret)}")
    return np.frombuffer(secret, dtype="<u2").astype(np.int64)


def split(secret: bytes, xs: Sequence[int], threshold: int, entropy: Entropy) -> np.ndarray:
    """Shares of ``secret`` for holders at the points ``xs``: an int64 array (len(xs), chunks).

    Raises
    ------
    ValidationError
        If ``threshold`` is not in ``[1, len(xs)]`` or the points are not distinct in
        ``[1, p)``.
    """
    points = np.asarray(list(xs), dtype=np.int64)
    if not 1 <= threshold <= len(points):
        raise ValidationError(
            f"threshold must be in [1, {len(points)}] (the number of holders), got {threshold}"
        )
    if len(set(points.tolist())) != len(points) or points.min() < 1 or points.max() >= PRIME:
        raise ValidationError(f"share points must be distinct integers in [1, p), got {xs}")
    chunks = _chunks(secret)
    raw = np.frombuffer(entropy(8 * (threshold - 1) * len(chunks)), dtype="<u8")
    coef = (raw % np.uint64(PRIME)).astype(np.int64).reshape(threshold - 1, len(chunks))
    x = points[:, None]
    y = np.zeros((len(points), len(chunks)), dtype=np.int64)
    for row in coef[::-1]:  # Horner over the degree (t - 1 steps), vectorized over all else
        y = (y * x + row) % PRIME
    return (y * x + chunks) % PRIME


def _lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        out.append(num * pow(den, PRIME - 2, PRIME) % PRIME)
    return out


def reconstruct(xs: Sequence[int], shares: np.ndarray, threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares ``(xs[i], shares[i])``.

    Raises
    ------
    ValidationError
        If fewer than ``threshold`` shares are given, points repeat, or the result is not a
        valid secret (the shares do not belong together).
    """
    points = [int(x) for x in xs]
    values = np.asarray(shares, dtype=np.int64)
    if len(points) < threshold:
        raise ValidationError(f"{len(points)} shares given, {threshold} needed to reconstruct")
    if len(set(points)) != len(points) or values.shape[0] != len(points):
        raise ValidationError(f"share points must be distinct and match the shares, got {xs}")
    use = points[:threshold]
    acc = np.zeros(values.shape[1], dtype=np.int64)
    for lam, row in zip(_lagrange_at_zero(use), values[:threshold], strict=True):
        acc = (acc + lam * row % PRIME) % PRIME
    if (acc > 0xFFFF).any():
        raise ValidationError("shares do not reconstruct a valid secret (inconsistent shares)")
    return acc.astype("<u2").tobytes()


def _inverse(values: np.ndarray) -> np.ndarray:
    """``values^(p - 2) mod p`` elementwise: the inverse of each nonzero value mod p."""
    result = np.ones_like(values)
    base = values % PRIME
    exponent = PRIME - 2
    while exponent:
        if exponent & 1:
            result = result * base % PRIME
        base = base * base % PRIME
        exponent >>= 1
    return result


def _lagrange_at_zero_many(points: np.ndarray) -> np.ndarray:
    """Row ``m`` of the result: the Lagrange coefficients at 0 of the points in row ``m``."""
    num = np.ones_like(points)
    den = np.ones_like(points)
    columns = np.arange(points.shape[1])
    for j in columns:
        xj = points[:, j : j + 1]
        other = columns != j
        num = np.where(other, num * xj % PRIME, num)
        den = np.where(other, den * ((xj - points) % PRIME) % PRIME, den)
    return num * _inverse(den) % PRIME


def interpolate_many(points: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """The value at 0 of each row's polynomial: ``points`` (m, t), ``shares`` (m, t, chunks).

    No checks: :func:`reconstruct_many` validates and decodes. Returns int64 (m, chunks).
    """
    lam = _lagrange_at_zero_many(np.asarray(points, dtype=np.int64))
    terms = lam[:, :, None] * np.asarray(shares, dtype=np.int64) % PRIME  # each < 2^31
    return terms.sum(axis=1) % PRIME  # at most t * 2^31: exact in int64


def reconstruct_many(
    xs: Sequence[Sequence[int]], shares: Sequence[np.ndarray], threshold: int
) -> list[bytes]:
    """``[reconstruct(xs[i], shares[i], threshold) for i ...]``, computed in one batch.

    Raises
    ------
    ValidationError
        As :func:`reconstruct` would for the first bad secret, naming its index.
    """
    if not xs:
        return []
    if len(xs) != len(shares):
        raise ValidationError(f"{len(xs)} point sets for {len(shares)} share sets")
    points, rows = [], []
    for i, (pts, values) in enumerate(zip(xs, shares, strict=True)):
        use = [int(x) for x in pts]
        block = np.asarray(values, dtype=np.int64)
        if len(use) < threshold:
            raise ValidationError(
                f"secret {i}: {len(use)} shares given, {threshold} needed to reconstruct"
            )
        if len(set(use)) != len(use) or block.ndim != 2 or block.shape[0] != len(use):
            raise ValidationError(f"secret {i}: share points must be distinct and match, got {pts}")
        points.append(use[:threshold])
        rows.append(block[:threshold])
    if len({r.shape[1] for r in rows}) != 1:
        raise ValidationError("secrets to reconstruct together must have the same length")
    acc = interpolate_many(np.array(points, dtype=np.int64), np.stack(rows))
    bad = np.flatnonzero((acc > 0xFFFF).any(axis=1))
    if bad.size:
        raise ValidationError(
            f"secret {int(bad[0])}: shares do not reconstruct a valid secret (inconsistent shares)"
        )
    return [row.astype("<u2").tobytes() for row in acc]
