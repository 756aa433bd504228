"""CKKS through TenSEAL: the :class:`~fedcare.secure.he.base.HEBackend` fedcare ships.

Parameters (:data:`POLY_MODULUS_DEGREE`, :data:`COEFF_MOD_BIT_SIZES`, :data:`SCALE_BITS`) are
chosen for sums only — no multiplication, so no rescaling level is needed:

* ``N = 4096`` with moduli ``[58, 51]`` (109 bits: the 128-bit-security maximum for N = 4096 in
  the HE standard). A fresh ciphertext lives at the single 58-bit data prime: ``2 * N``
  coefficients for ``N / 2`` real slots. SEAL stores each in a 64-bit word and compresses the
  serialization (zstd), which recovers part of the 6 unused top bits: about 31 bytes per value,
  7.8x a float32 (a 60-bit prime gives 8.0x, more primes only add bytes). Below that needs
  complex packing or seeded symmetric ciphertexts, which TenSEAL does not expose.
* scale ``2^40``: a slot holds ``|x| < q0 / (2 * 2^40) ~ 2^17``; we allow
  :data:`MAX_ABS_SUM` ``= 2^16`` for a sum, i.e. :data:`MAX_ABS` per value over up to
  :data:`MAX_SITES` sites (sites encrypt ``samples / weight_unit`` as the weight, so this is
  no limit on cohort size).
* error: :func:`error_bound` — ``k`` fresh ciphertexts summed decode within
  ``k * (B_clean + N / 2) / 2^40`` of the plaintext sum, where
  ``B_clean = 8 sqrt(2) sigma N + 6 sigma sqrt(N) + 16 sigma sqrt(h N)`` is the canonical-embedding
  bound on fresh-encryption noise (Cheon, Kim, Kim, Song 2017, lemma 1; ``sigma = 3.2``, ternary
  secret of weight ``h ~ 2N/3``) and ``N / 2`` bounds the encoding rounding. That is about
  ``2.9e-7`` per summed site, ``2.9e-5`` for 100 sites: relative ``~1e-5`` of sums of order 1.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fedcare.errors import AggregationError, ConfigError, ValidationError
from fedcare.secure.he.base import HEBackend

__all__ = [
    "COEFF_MOD_BIT_SIZES",
    "MAX_ABS",
    "MAX_ABS_SUM",
    "MAX_SITES",
    "POLY_MODULUS_DEGREE",
    "SCALE_BITS",
    "CKKSBackend",
    "error_bound",
    "require_tenseal",
]

POLY_MODULUS_DEGREE = 4096
COEFF_MOD_BIT_SIZES = (58, 51)
SCALE_BITS = 40
MAX_SITES = 100
MAX_ABS_SUM = 2.0**16
MAX_ABS = MAX_ABS_SUM / MAX_SITES
_SIGMA = 3.2


def require_tenseal() -> Any:
    """The ``tenseal`` module (the optional extra ``he``, imported on first use).

    Raises
    ------
    ConfigError
        If TenSEAL is not installed, saying how to install it.
    """
    try:
        return importlib.import_module("tenseal")
    except ImportError:
        raise ConfigError(
            "privacy mode 'encrypted' needs TenSEAL: pip install 'fedcare[he]' (tenseal>=0.3.18)"
        ) from None


def error_bound(
    num_summed: int, n: int = POLY_MODULUS_DEGREE, scale_bits: int = SCALE_BITS
) -> float:
    """High-probability bound on ``|decrypt(sum of k ciphertexts) - sum|`` per slot."""
    h = 2 * n / 3
    b_clean = 8 * math.sqrt(2) * _SIGMA * n + 6 * _SIGMA * math.sqrt(n)
    b_clean += 16 * _SIGMA * math.sqrt(h * n)
    return num_summed * (b_clean + n / 2) / 2.0**scale_bits


class CKKSBackend(HEBackend):
    """A TenSEAL CKKS context; build one with :meth:`keygen` or :meth:`from_bytes`."""

    scheme = "ckks"

    def __init__(self, context: Any) -> None:
        self._ctx = context
        self._ts = require_tenseal()
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:  # the keys never change: hash the public context once
            self._fingerprint = super().fingerprint()
        return self._fingerprint

    @classmethod
    def keygen(cls) -> CKKSBackend:
        """A new key pair (secret context). Only provisioning and simulation call this."""
        tenseal = require_tenseal()
        ctx = tenseal.context(
            tenseal.SCHEME_TYPE.CKKS,
            poly_modulus_degree=POLY_MODULUS_DEGREE,
            coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES),
        )
        ctx.global_scale = 2.0**SCALE_BITS
        return cls(ctx)

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str = "HE context") -> CKKSBackend:
        """Load a serialized context (secret or public).

        Raises
        ------
        ValidationError
            If ``data`` is not a CKKS context with fedcare's parameters (names ``what``).
        """
        tenseal = require_tenseal()
        try:
            ctx = tenseal.context_from(bytes(data))
        except Exception as err:  # TenSEAL raises plain ValueError / RuntimeError
            raise ValidationError(f"{what} does not parse as a TenSEAL context: {err}") from None
        try:  # a BFV context has no scale
            scale = ctx.global_scale
        except Exception:
            scale = None
        if scale != 2.0**SCALE_BITS:
            raise ValidationError(
                f"{what} is not a CKKS context with scale 2^{SCALE_BITS} (scale {scale!r})"
            )
        return cls(ctx)

    @classmethod
    def public_from_bytes(cls, data: bytes, *, what: str = "public HE context") -> CKKSBackend:
        """Load a context that must NOT hold the secret key (the coordinator's).

        Raises
        ------
        ValidationError
            If ``data`` holds a secret key: the coordinator must never have it.
        """
        backend = cls.from_bytes(data, what=what)
        if backend.has_secret_key:
            raise ValidationError(f"{what} holds the secret key; the coordinator must not")
        return backend

    @property
    def has_secret_key(self) -> bool:
        return bool(self._ctx.is_private())

    @property
    def slots(self) -> int:
        return POLY_MODULUS_DEGREE // 2

    def public_bytes(self) -> bytes:
        data: bytes = self._ctx.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        return data

    def secret_bytes(self) -> bytes:
        if not self.has_secret_key:
            raise ValidationError("this HE context holds no secret key to serialize")
        data: bytes = self._ctx.serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        return data

    def encrypt(self, values: np.ndarray) -> list[bytes]:
        vec = np.asarray(values, dtype=np.float64)
        if vec.ndim != 1 or vec.size == 0:
            raise ValidationError(f"HE encrypt needs a non-empty 1-d vector, got shape {vec.shape}")
        if not np.all(np.isfinite(vec)):
            raise ValidationError("HE encrypt got non-finite values")
        peak = float(np.abs(vec).max())
        if peak > MAX_ABS:
            raise ValidationError(
                f"HE encrypt: |value| {peak:.6g} exceeds {MAX_ABS:.6g} (2^16 over "
                f"{MAX_SITES} sites; CKKS scale 2^{SCALE_BITS} would overflow the sum)"
            )
        out = []
        for start in range(0, vec.size, self.slots):
            chunk = vec[start : start + self.slots]
            out.append(bytes(self._ts.ckks_vector(self._ctx, chunk.tolist()).serialize()))
        return out

    def _load(self, data: bytes, what: str) -> Any:
        try:
            return self._ts.ckks_vector_from(self._ctx, bytes(data))
        except Exception as err:  # TenSEAL raises plain ValueError / RuntimeError
            raise AggregationError(f"{what} is not a CKKS ciphertext: {err}") from None

    def add(self, a: Sequence[bytes], b: Sequence[bytes]) -> list[bytes]:
        return self.sum([a, b])

    def sum(self, vectors: Iterable[Sequence[bytes]]) -> list[bytes]:
        total: list[Any] | None = None
        for i, vector in enumerate(vectors):
            cts = [self._load(c, f"vector {i} ciphertext {j}") for j, c in enumerate(vector)]
            if total is None:
                total = cts
            elif len(cts) != len(total):
                raise AggregationError(
                    f"encrypted vector {i} has {len(cts)} ciphertexts, expected {len(total)}"
                )
            else:
                for acc, ct in zip(total, cts, strict=True):
                    acc.add_(ct)
        if total is None:
            raise AggregationError("cannot sum zero encrypted vectors")
        return [bytes(ct.serialize()) for ct in total]

    def decrypt(self, ciphertexts: Sequence[bytes], length: int) -> np.ndarray:
        if not self.has_secret_key:
            raise ValidationError(
                "cannot decrypt: this HE context has no secret key (a coordinator's context)"
            )
        if len(ciphertexts) != self.num_ciphertexts(length):
            raise ValidationError(
                f"{len(ciphertexts)} ciphertexts cannot hold {length} values "
                f"({self.num_ciphertexts(length)} expected at {self.slots} slots each)"
            )
        try:
            parts = [self._ts.ckks_vector_from(self._ctx, bytes(c)).decrypt() for c in ciphertexts]
        except Exception as err:  # TenSEAL raises plain ValueError / RuntimeError
            raise ValidationError(f"HE ciphertexts do not decrypt: {err}") from None
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])[:length]
