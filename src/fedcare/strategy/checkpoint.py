"""Strategy state to and from plain named arrays plus a JSON header, for checkpoints.

``state_to_record`` flattens a :class:`StrategyState` into one :class:`ArrayRecord` (params,
server optimizer moments, extra arrays such as SCAFFOLD's control variate) and a small
JSON-able header; ``state_from_record`` validates both against the strategy and rebuilds the
state. Aggregators in the core stack are stateless between rounds, so their state is rebuilt by
the strategy (a stateful layer must add itself here when it is written).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.strategy.base import Strategy, StrategyState
from fedcare.strategy.server_opt import ServerOptState

__all__ = ["CHECKPOINT_VERSION", "state_from_record", "state_to_record"]

CHECKPOINT_VERSION = 1


def state_to_record(strategy: Strategy, state: StrategyState) -> tuple[ArrayRecord, dict[str, Any]]:
    """``(arrays, header)`` holding everything needed to resume ``strategy`` from ``state``."""
    record = state.params.prefixed("params")
    opt = state.optimizer
    if isinstance(opt, ServerOptState):
        for name, part in (("m", opt.m), ("v", opt.v)):
            if len(part):
                record = record.merged(part.prefixed(f"optimizer/{name}"))
    for group, arrays in state.arrays.items():
        record = record.merged(arrays.prefixed(f"arrays/{group}"))
    header = {
        "version": CHECKPOINT_VERSION,
        "strategy": strategy.name,
        "optimizer_step": opt.step if isinstance(opt, ServerOptState) else 0,
        "array_groups": sorted(state.arrays),
        "meta": dict(state.meta),
    }
    return record, header


def _require(header: Mapping[str, Any], key: str) -> Any:
    if key not in header:
        raise ValidationError(f"checkpoint header lacks {key!r}")
    return header[key]


def state_from_record(
    strategy: Strategy, record: ArrayRecord, header: Mapping[str, Any]
) -> StrategyState:
    """Rebuild the state saved by :func:`state_to_record`, checking it fits ``strategy``.

    Raises
    ------
    ValidationError
        For another checkpoint version or strategy, or arrays whose names or shapes differ
        from what the strategy's fresh state has.
    """
    version = _require(header, "version")
    if version != CHECKPOINT_VERSION:
        raise ValidationError(
            f"checkpoint version {version!r}, this fedcare reads {CHECKPOINT_VERSION}"
        )
    name = _require(header, "strategy")
    if name != strategy.name:
        raise ValidationError(f"checkpoint is for strategy {name!r}, not {strategy.name!r}")
    params = record.unprefixed("params")
    fresh = strategy.init_state(params)
    opt = fresh.optimizer
    if isinstance(opt, ServerOptState):
        m = record.unprefixed("optimizer/m") if len(opt.m) else opt.m
        v = record.unprefixed("optimizer/v") if len(opt.v) else opt.v
        opt.m.check_structure(m, what="checkpoint optimizer/m")
        opt.v.check_structure(v, what="checkpoint optimizer/v")
        opt = ServerOptState(m=m, v=v, step=int(_require(header, "optimizer_step")))
    groups = list(_require(header, "array_groups"))
    if sorted(groups) != sorted(fresh.arrays):
        raise ValidationError(
            f"checkpoint array groups {groups}, strategy has {sorted(fresh.arrays)}"
        )
    arrays = {g: record.unprefixed(f"arrays/{g}") for g in groups}
    for g, arr in arrays.items():
        fresh.arrays[g].check_structure(arr, what=f"checkpoint arrays/{g}")
    return StrategyState(
        params=params,
        aggregator=fresh.aggregator,
        optimizer=opt,
        arrays=arrays,
        meta=dict(_require(header, "meta")),
    )
