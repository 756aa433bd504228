"""The extension point for homomorphic encryption of model updates: :class:`HEBackend`.

A backend object is one loaded key context of one scheme. A *secret* context (held by sites)
can encrypt, add and decrypt; a *public* context (held by the coordinator) can only add
ciphertexts: it has no secret key, so decrypting with it raises
:class:`~fedcare.errors.ValidationError`. Ciphertexts travel as opaque ``bytes``; a vector is
packed into as few ciphertexts as the scheme's slot count allows (``ceil(len / slots)``).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import numpy as np

from fedcare.errors import AggregationError

__all__ = ["HEBackend"]


class HEBackend(ABC):
    """One key context of an additively homomorphic scheme."""

    #: Scheme name, written into pipeline specs (e.g. ``"ckks"``).
    scheme: str = ""

    @property
    @abstractmethod
    def has_secret_key(self) -> bool:
        """Whether this context holds the secret key (a site's) or not (the coordinator's)."""

    @property
    @abstractmethod
    def slots(self) -> int:
        """How many values one ciphertext packs."""

    @abstractmethod
    def public_bytes(self) -> bytes:
        """This context serialized *without* the secret key (safe for the coordinator kit).

        Returns
        -------
        bytes
            A context that can add ciphertexts but never decrypt them.
        """

    @abstractmethod
    def secret_bytes(self) -> bytes:
        """This context serialized *with* the secret key (only for site kits).

        Raises
        ------
        ValidationError
            If this context holds no secret key.
        """

    @abstractmethod
    def encrypt(self, values: np.ndarray) -> list[bytes]:
        """Encrypt a 1-d float vector into ``ceil(len(values) / slots)`` packed ciphertexts.

        Parameters
        ----------
        values:
            Finite floats; the backend's :attr:`max_abs` bounds each one and the sum.

        Returns
        -------
        list[bytes]
            Serialized ciphertexts, in order.

        Raises
        ------
        ValidationError
            If ``values`` is not a finite 1-d vector within the backend's bounds.
        """

    @abstractmethod
    def add(self, a: Sequence[bytes], b: Sequence[bytes]) -> list[bytes]:
        """Slot-wise sum of two packed ciphertext vectors (no secret key needed).

        Raises
        ------
        AggregationError
            If the two do not have the same number of ciphertexts or one does not parse.
        """

    @abstractmethod
    def decrypt(self, ciphertexts: Sequence[bytes], length: int) -> np.ndarray:
        """Decrypt packed ciphertexts back into the first ``length`` values.

        Raises
        ------
        ValidationError
            If this context has no secret key, or the ciphertexts do not hold ``length``
            values.
        """

    def sum(self, vectors: Iterable[Sequence[bytes]]) -> list[bytes]:
        """The slot-wise sum of one or more packed ciphertext vectors.

        Raises
        ------
        AggregationError
            If ``vectors`` is empty or the vectors differ in their number of ciphertexts.
        """
        total: list[bytes] | None = None
        for vector in vectors:
            total = list(vector) if total is None else self.add(total, vector)
        if total is None:
            raise AggregationError("cannot sum zero encrypted vectors")
        return total

    def fingerprint(self) -> str:
        """A short hash of the public context: sites and coordinator check they share keys."""
        return hashlib.sha256(self.public_bytes()).hexdigest()[:16]

    def num_ciphertexts(self, length: int) -> int:
        """How many ciphertexts a vector of ``length`` values packs into."""
        return max(1, -(-length // self.slots))
