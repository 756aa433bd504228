"""Drive the encrypted sum (privacy mode ``encrypted``) through the round loop.

The loop calls :func:`run_encrypted_sum` instead of one ``fit`` exchange when the strategy's
aggregator names ``"encrypted_sum"`` as its multi-stage protocol (``aggregator.multistage()`` of
:class:`~fedcare.secure.he.layer.EncryptedSum`, :data:`fedcare.strategy.loop.PROTOCOL_RUNNERS`).
Two exchanges over the same grid: ``fit`` (each site trains and replies with CKKS ciphertexts of
``[w * delta, w]``), then, after the coordinator has summed the ciphertexts with its public
context, a ``secagg`` task with ``he_stage=decrypt`` to one or more contributing sites, which
return the decrypted sum. That sum becomes a single reply whose arrays are the weighted mean
update, so the strategy's aggregation and server optimizer run unchanged (as after secure
aggregation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fedcare.aggregation.base import Measurements
from fedcare.errors import AggregationError, RoundFailedError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Scalar
from fedcare.secure.he.layer import EncryptedSumServer, ciphertext_record
from fedcare.strategy.base import Instruction, StrategyState
from fedcare.strategy.multistage import Send

__all__ = ["DECRYPT_STAGE", "ENCRYPTED_SUM_SITE", "encrypted_protocol", "run_encrypted_sum"]

#: The ``site_id`` of the one reply that carries the decrypted sum.
ENCRYPTED_SUM_SITE = "encrypted-sum"
#: ``Task.config["he_stage"]`` of the decryption task (task kind ``secagg``).
DECRYPT_STAGE = "decrypt"


def encrypted_protocol(strategy: Any) -> EncryptedSumServer | None:
    """The encrypted-sum protocol of the strategy's aggregator, if it has one."""
    protocol = getattr(getattr(strategy, "aggregator", None), "protocol", None)
    return protocol if isinstance(protocol, EncryptedSumServer) else None


def _fail(round: int, why: str, failures: dict[str, str], replied: int) -> RoundFailedError:
    return RoundFailedError(
        f"round {round}: {why}; failures: {failures}", round=round, replied=replied, required=1
    )


def _decrypt(
    send: Send,
    cfg: Any,
    protocol: EncryptedSumServer,
    total: list[bytes],
    order: Sequence[str],
    length: int,
    failures: dict[str, str],
) -> tuple[np.ndarray, str]:
    """Ask ``protocol.decryptors`` sites at a time, in ``order``, until one decrypts."""
    config: dict[str, Scalar] = {
        "he_stage": DECRYPT_STAGE,
        "he_length": length,
        "he_fingerprint": protocol.context.fingerprint(),
    }
    payload = ciphertext_record(total)
    for start in range(0, len(order), protocol.decryptors):
        batch = order[start : start + protocol.decryptors]
        ins = [Instruction(s, config=config, arrays={"he": payload}) for s in batch]
        stage_failures: dict[str, str] = {}
        sums: dict[str, np.ndarray] = {}
        for reply in list(send(cfg, "secagg", ArrayRecord(), ins, stage_failures)):
            vec = reply.arrays.get("sum")
            if vec is not None and vec.shape == (length,) and vec.dtype == np.float64:
                sums[reply.site_id] = vec
            else:
                stage_failures[reply.site_id] = "decrypt reply carries no float64 'sum' vector"
        failures.update({s: f"he decrypt: {why}" for s, why in stage_failures.items()})
        if sums:
            first, vec = next(iter(sums.items()))
            differ = [s for s, v in sums.items() if not np.allclose(v, vec, rtol=0, atol=1e-9)]
            if differ:  # decryption is deterministic: honest sites return the same sum
                raise AggregationError(f"decrypting sites {[first, *differ]} disagree on the sum")
            return vec, first
    raise AggregationError(f"no site decrypted the encrypted sum (asked {list(order)})")


def run_encrypted_sum(
    send: Send,
    cfg: Any,
    strategy: Any,
    round: int,
    state: StrategyState,
    ins: Sequence[Instruction],
    failures: dict[str, str],
) -> tuple[list[Reply], Measurements]:
    """Run fit, encrypted sum and decryption; return ``([mean-update reply], measurements)``.

    ``send(cfg, kind, params, instructions, failures)`` is the loop's exchange over its grid.

    Raises
    ------
    RoundFailedError
        When no site sent a usable encrypted update or no site decrypted the sum.
    """
    protocol = encrypted_protocol(strategy)
    assert protocol is not None
    assert not protocol.context.has_secret_key  # the coordinator side never holds it
    template: ArrayRecord = strategy.aggregation_template(state.params)
    length = template.num_params + 1
    cfg = replace(cfg, pipeline={**cfg.pipeline, **strategy.aggregator.site_spec()})
    fit_failures: dict[str, str] = {}
    fit_replies = list(send(cfg, "fit", state.params, ins, fit_failures))
    inbound = {r.site_id: r.arrays for r in fit_replies}
    failures.update(fit_failures)
    try:
        summed = protocol.collect(length, inbound)
        failures.update({s: f"he: {why}" for s, why in summed.rejected.items()})
        rng = np.random.default_rng([cfg.seed, round, 0x4E])
        order = [summed.sites[i] for i in rng.permutation(len(summed.sites))]
        total, decrypted_by = _decrypt(
            send, cfg, protocol, summed.ciphertexts, order, length, failures
        )
        mean, weight = protocol.decrypted_mean(total, length)
    except AggregationError as err:
        raise _fail(round, str(err), failures, len(inbound)) from err
    reply = Reply(
        cfg.study_id,
        round,
        ENCRYPTED_SUM_SITE,
        "fit",
        arrays=template.unflatten(mean),
        num_samples=max(1, int(np.floor(weight + 0.5))),
    )
    plain_bytes = 4 * length * len(summed.sites)  # the same vectors as float32
    measurements: Measurements = {
        "num_contributions": len(summed.sites),
        "contributing_sites": list(summed.sites),
        "total_weight": weight,
        "he_decrypted_by": decrypted_by,
        "he_ciphertext_bytes": summed.bytes_in,
        "he_expansion": summed.bytes_in / plain_bytes,
        "site_info": {r.site_id: dict(r.info) for r in fit_replies if r.site_id in summed.sites},
    }
    return [reply], measurements
