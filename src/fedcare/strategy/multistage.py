"""Drive a multi-stage aggregation protocol (secure aggregation) through the round loop.

The loop calls :func:`run_secure_sum` instead of one ``fit`` exchange when the strategy's
aggregator names ``"secure_sum"`` as its multi-stage protocol (``aggregator.multistage()``,
:data:`fedcare.strategy.loop.PROTOCOL_RUNNERS`). Each protocol stage becomes one exchange over
the same grid: ``secagg`` tasks for key advertisement, share relay and unmasking; the ``fit``
task for the masked input (the site trains, then masks ``[w * delta, w]``). The decoded sum
becomes a single reply whose arrays are the weighted mean update, so the strategy's aggregation
and server optimizer run unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fedcare.aggregation.base import Measurements
from fedcare.errors import AggregationError, RoundFailedError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, TaskKind
from fedcare.secure.secagg.messages import ClientMessage
from fedcare.secure.secagg.server import SecAggServer
from fedcare.strategy.base import Instruction, StrategyState

__all__ = ["SECURE_SUM_SITE", "Send", "run_secure_sum", "secure_protocol"]

#: The ``site_id`` of the one reply that carries the securely summed update.
SECURE_SUM_SITE = "secure-sum"

Send = Callable[
    [Any, TaskKind, ArrayRecord, Sequence[Instruction], dict[str, str]], Iterator[Reply]
]


def secure_protocol(strategy: Any) -> SecAggServer | None:
    """The strategy aggregator's secure-sum protocol state machine, if it has one."""
    protocol = getattr(getattr(strategy, "aggregator", None), "protocol", None)
    return protocol if isinstance(protocol, SecAggServer) else None


def _stage_instructions(
    out: dict[str, Any], fit: dict[str, Instruction], masked: bool
) -> list[Instruction]:
    ins = []
    for site, msg in out.items():
        base = fit[site] if masked else Instruction(site)
        config = {**base.config, **msg.config()}
        ins.append(Instruction(site, config=config, arrays={**base.arrays, "secagg": msg.payload}))
    return ins


def run_secure_sum(
    send: Send,
    cfg: Any,
    strategy: Any,
    round: int,
    state: StrategyState,
    ins: Sequence[Instruction],
    failures: dict[str, str],
) -> tuple[list[Reply], Measurements]:
    """Run all stages; return ``([reply with the weighted mean update], measurements)``.

    ``send(cfg, kind, params, instructions, failures)`` is the loop's exchange over its grid.

    Raises
    ------
    RoundFailedError
        When too many sites dropped out (the message names the stage and the counts).
    """
    protocol = secure_protocol(strategy)
    assert protocol is not None
    template: ArrayRecord = strategy.aggregation_template(state.params)
    spec = {**cfg.pipeline, **strategy.aggregator.site_spec()}  # tells sites to mask
    cfg = replace(cfg, pipeline=spec)
    seed = int(np.random.SeedSequence([cfg.seed, round, 0x5EC]).generate_state(1)[0])
    sites = [i.site_id for i in ins]
    pstate, out = protocol.start(cfg.study_id, round, sites, template.num_params + 1, seed=seed)
    fit = {i.site_id: i for i in ins}
    site_info: dict[str, dict[str, str]] = {}
    while pstate.stage is not None:
        stage = pstate.stage
        masked = stage == "mask"
        kind: TaskKind = "fit" if masked else "secagg"
        params = state.params if masked else ArrayRecord()
        stage_failures: dict[str, str] = {}
        replies = list(
            send(cfg, kind, params, _stage_instructions(out, fit, masked), stage_failures)
        )
        if masked:  # provenance of each masked input (fingerprint, plan hash; no values)
            site_info = {r.site_id: dict(r.info) for r in replies}
        inbound = {r.site_id: ClientMessage(stage, r.arrays) for r in replies}
        failures.update({s: f"secagg {stage}: {why}" for s, why in stage_failures.items()})
        try:
            pstate, out = protocol.step(pstate, inbound)
        except AggregationError as err:
            raise RoundFailedError(
                f"round {round}: {err}; failures: {failures}",
                round=round,
                replied=len(inbound),
                required=pstate.setup.threshold,
            ) from err
    result = pstate.result
    assert result is not None
    weight = float(result.total[-1])
    if not weight > 0:
        raise RoundFailedError(
            f"round {round}: securely summed weight is {weight}; no usable update",
            round=round,
            replied=len(result.sites),
            required=1,
        )
    mean = template.unflatten(result.total[:-1] / weight)
    reply = Reply(
        cfg.study_id,
        round,
        SECURE_SUM_SITE,
        "fit",
        arrays=mean,
        num_samples=max(1, int(round_half(weight))),
    )
    measurements: Measurements = {
        "num_contributions": len(result.sites),
        "contributing_sites": list(result.sites),
        "total_weight": weight,
        "secagg_dropped": {k: list(v) for k, v in result.dropped.items()},
        "secagg_threshold": pstate.setup.threshold,
        "secagg_degree": len(next(iter(pstate.setup.neighbours.values()))),
        "site_info": {s: site_info.get(s, {}) for s in result.sites},
    }
    return [reply], measurements


def round_half(x: float) -> int:
    return int(np.floor(x + 0.5))
