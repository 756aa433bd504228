"""SCAFFOLD (Karimireddy et al., ICML 2020), option II control variates.

The server keeps a control variate ``c``; each site keeps its own ``c_i`` (site state, never
sent). Sites train with every gradient corrected by ``c - c_i`` and reply with their model
delta and their control delta ``c_i+ - c_i``, where
``c_i+ = c_i - c + (x - y_i) / (K * lr)`` for ``K`` local steps. The server moves
``x += server_lr * mean(delta)`` and ``c += |S| / N * mean(control delta)``.

Both means use the same aggregator (sample-weighted by default), so any layer in the stack
(validation, clipping, secure sum) sees one contribution per site.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

import fedcare.strategy.server_opt as server_opt
from fedcare.aggregation.base import Measurements
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply
from fedcare.strategy.base import Instruction, StrategyState
from fedcare.strategy.fedopt import FedOpt

__all__ = ["Scaffold"]

DELTA, CONTROL = "delta", "control"


class Scaffold(FedOpt):
    """SCAFFOLD with a server learning rate; local optimizer must be plain SGD."""

    name = "scaffold"
    algorithm = "scaffold"

    def __init__(self, *, server_lr: float = 1.0, **kwargs: Any) -> None:
        super().__init__(optimizer=server_opt.SGD(lr=server_lr), **kwargs)

    def aggregation_template(self, params: ArrayRecord) -> ArrayRecord:
        return params.prefixed(DELTA).merged(params.prefixed(CONTROL))

    def init_state(self, params: ArrayRecord) -> StrategyState:
        base = super().init_state(params)
        control = params.zeros_like()
        return StrategyState(
            params=base.params,
            aggregator=base.aggregator,
            optimizer=base.optimizer,
            arrays={CONTROL: control},
        )

    def site_config(self) -> dict[str, Any]:
        return {**super().site_config(), "optimizer": "sgd"}

    def configure_fit(
        self, round: int, state: StrategyState, sites: Sequence[str], rng: np.random.Generator
    ) -> list[Instruction]:
        chosen = super().configure_fit(round, state, sites, rng)
        control = state.arrays[CONTROL]
        return [Instruction(i.site_id, config=i.config, arrays={CONTROL: control}) for i in chosen]

    def aggregate_fit(
        self, round: int, state: StrategyState, replies: Iterable[Reply], *, num_available: int
    ) -> tuple[StrategyState, Measurements]:
        mean, agg_state, measurements = self._mean_update(state, replies)
        delta, control_delta = mean.unprefixed(DELTA), mean.unprefixed(CONTROL)
        params, opt_state = self._apply(state, delta)
        participation = measurements["num_contributions"] / max(num_available, 1)
        control = state.arrays[CONTROL].zip_map(
            control_delta, lambda c, d: (c + participation * d).astype(c.dtype)
        )
        new_state = StrategyState(
            params=params, aggregator=agg_state, optimizer=opt_state, arrays={CONTROL: control}
        )
        return new_state, {
            **measurements,
            "update_norm": delta.norm(),
            "control_norm": control.norm(),
        }
