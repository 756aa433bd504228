"""The encrypted-sum aggregation layer: the coordinator adds CKKS ciphertexts it cannot open.

:class:`EncryptedSum` is the outermost layer of a pipeline, like
:class:`~fedcare.secure.secagg.layer.SecureSum`. Its ``protocol`` (:class:`EncryptedSumServer`,
sans-I/O) is driven by the round loop (:mod:`fedcare.strategy.encrypted`):

1. ``fit``: each site trains, then encrypts ``[w * delta, w]`` (``w`` = samples /
   ``weight_unit``) with the federation's key and replies with packed ciphertexts only.
2. the coordinator sums the ciphertexts with its PUBLIC context (it has no secret key).
3. ``decrypt`` (a ``secagg`` task with ``he_stage=decrypt``): one or more contributing sites
   decrypt the encrypted SUM and return it in plaintext.

What the coordinator learns: no site's update (only ciphertexts), but the decrypted weighted
sum and total weight, hence the mean update — the same as in ``secure`` mode — so that the
server optimizer, checkpoints and evaluation run unchanged. Trust: the coordinator is honest
but curious; a coordinator that sent one site's ciphertext (or a multiple of it) as "the sum"
to decrypt would learn that update. Secure aggregation (``secure``) does not need that trust.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.errors import AggregationError, ConfigError
from fedcare.records.arrays import ArrayRecord
from fedcare.secure.he.base import HEBackend

__all__ = [
    "DEFAULT_WEIGHT_UNIT",
    "PROTOCOL",
    "SPEC_VERSION",
    "EncryptedSum",
    "EncryptedSumServer",
    "SumResult",
    "ciphertext_record",
    "ciphertexts_of",
    "with_encrypted_sum",
]

SPEC_VERSION = 1
#: What :meth:`EncryptedSum.multistage` names: the round loop runs the encrypted-sum stages.
PROTOCOL = "encrypted_sum"
#: Sites encrypt ``w = samples / weight_unit`` (part of an ``encrypted`` plan's site half).
DEFAULT_WEIGHT_UNIT = 1000.0
_OPTIONS = {"decryptors", "weight_unit"}


def ciphertext_record(ciphertexts: list[bytes]) -> ArrayRecord:
    """Packed ciphertexts as uint8 arrays ``ct00000, ct00001, ...``."""
    return ArrayRecord(
        {f"ct{i:05d}": np.frombuffer(c, dtype=np.uint8) for i, c in enumerate(ciphertexts)}
    )


def ciphertexts_of(record: ArrayRecord) -> list[bytes]:
    """The ciphertexts in ``record`` (keys ``ct*``, in order); other arrays are refused.

    Raises
    ------
    AggregationError
        If a key is not ``ct*`` or an array is not 1-d uint8 (names it).
    """
    out = []
    for key in sorted(record):
        arr = record[key]
        if not key.startswith("ct") or arr.dtype != np.uint8 or arr.ndim != 1:
            raise AggregationError(
                f"encrypted reply array {key!r} ({arr.dtype}{arr.shape}) is not a ciphertext"
            )
        out.append(arr.tobytes())
    return out


@dataclass(frozen=True)
class SumResult:
    """The encrypted sum of one round and what it took."""

    ciphertexts: list[bytes]
    sites: tuple[str, ...]
    rejected: Mapping[str, str]
    bytes_in: int


class EncryptedSumServer:
    """Sums sites' packed ciphertexts with a context that has no secret key.

    Parameters
    ----------
    context:
        The federation's PUBLIC context; one with the secret key is refused.
    decryptors:
        How many contributing sites are asked to decrypt the sum (the first answer is used).
    weight_unit:
        Sites encrypt ``w = samples / weight_unit`` to keep sums inside the CKKS range.
    """

    def __init__(
        self,
        context: HEBackend,
        *,
        decryptors: int = 1,
        weight_unit: float = DEFAULT_WEIGHT_UNIT,
    ) -> None:
        if context.has_secret_key:
            raise ConfigError("the coordinator's HE context holds the secret key; refusing it")
        if not isinstance(decryptors, int) or decryptors < 1:
            raise ConfigError(
                f"encrypted option decryptors must be an int >= 1, got {decryptors!r}"
            )
        if not weight_unit > 0:
            raise ConfigError(f"encrypted option weight_unit must be > 0, got {weight_unit!r}")
        self.context = context
        self.decryptors = decryptors
        self.weight_unit = float(weight_unit)

    def spec(self) -> dict[str, Any]:
        """What sites need to encrypt: scheme, key fingerprint, weight unit."""
        return {
            "version": SPEC_VERSION,
            "scheme": self.context.scheme,
            "fingerprint": self.context.fingerprint(),
            "weight_unit": self.weight_unit,
        }

    def collect(self, length: int, inbound: Mapping[str, ArrayRecord]) -> SumResult:
        """Sum the well-formed encrypted vectors of ``length`` values; note the rest.

        Raises
        ------
        AggregationError
            If no reply carries a well-formed encrypted vector.
        """
        want = self.context.num_ciphertexts(length)
        good: dict[str, list[bytes]] = {}
        rejected: dict[str, str] = {}
        for site, record in sorted(inbound.items()):
            try:
                cts = ciphertexts_of(record)
            except AggregationError as err:
                rejected[site] = str(err)
                continue
            if len(cts) != want:
                rejected[site] = f"{len(cts)} ciphertexts, expected {want} for {length} values"
                continue
            good[site] = cts
        if not good:
            raise AggregationError(f"no well-formed encrypted update arrived; rejected: {rejected}")
        total = self.context.sum(good.values())
        size = sum(len(c) for cts in good.values() for c in cts)
        return SumResult(total, tuple(good), rejected, size)

    def decrypted_mean(self, total: np.ndarray, length: int) -> tuple[np.ndarray, float]:
        """``(mean update, total samples)`` from a decrypted ``[sum w*delta, sum w]``.

        Raises
        ------
        AggregationError
            If the vector has the wrong length, is not finite or its weight is not positive.
        """
        vec = np.asarray(total, dtype=np.float64)
        if vec.shape != (length,) or not np.all(np.isfinite(vec)):
            raise AggregationError(
                f"decrypted sum has shape {vec.shape} (finite: {bool(np.all(np.isfinite(vec)))}), "
                f"expected ({length},) finite values"
            )
        weight = float(vec[-1])
        if not weight > 0:
            raise AggregationError(f"decrypted total weight is {weight}; no usable update")
        return vec[:-1] / weight, weight * self.weight_unit


class EncryptedSum(Aggregator[Any]):
    """CKKS-encrypted sum around ``inner``, which receives the decrypted weighted mean."""

    def __init__(self, inner: Aggregator[Any], protocol: EncryptedSumServer) -> None:
        self.inner = inner
        self.protocol = protocol

    def init(self, template: ArrayRecord) -> Any:
        return self.inner.init(template)

    def update(
        self, state: Any, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, Any, Measurements]:
        return self.inner.update(state, contributions)

    def site_spec(self) -> Mapping[str, Any]:
        return {**self.inner.site_spec(), "he": self.protocol.spec()}

    def multistage(self) -> str:
        return PROTOCOL


def with_encrypted_sum(strategy: Any, options: Mapping[str, Any], context: HEBackend) -> Any:
    """A copy of ``strategy`` whose aggregator is wrapped in :class:`EncryptedSum`.

    ``options`` may set ``decryptors`` and ``weight_unit``; ``context`` is the PUBLIC context.

    Raises
    ------
    ConfigError
        If the strategy cannot aggregate a sum, an option is unknown, or ``context`` holds
        the secret key.
    """
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"encrypted mode has no option(s) {unknown} (known: {sorted(_OPTIONS)})")
    if (
        not isinstance(getattr(strategy, "aggregator", None), Aggregator)
        or not hasattr(strategy, "aggregation_template")
        or getattr(strategy, "algorithm", None) == "scaffold"
    ):
        raise ConfigError(f"strategy {strategy.name!r} does not support encrypted aggregation")
    out = copy.copy(strategy)
    out.aggregator = EncryptedSum(strategy.aggregator, EncryptedSumServer(context, **options))
    return out
