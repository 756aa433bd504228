"""Study checkpoints: strategy state, per-task arrays and a JSON header in one artifact.

The global parameters are the round's params artifact, stored beside it (the registry and the
reports read them there), so the state artifact does not carry them a second time (header
``"params": "artifact"``): :func:`decode_checkpoint` takes them from the params artifact. A
checkpoint written before (its state holding ``params/...``) still reads as it is.
"""

from __future__ import annotations

import json

import numpy as np

from fedcare.errors import FedcareError
from fedcare.records.arrays import ArrayRecord
from fedcare.strategy.base import Strategy, StrategyState
from fedcare.strategy.checkpoint import state_from_record, state_to_record
from fedcare.strategy.driver import StudyStart
from fedcare.transport.arrays_wire import EncodedParts, encode_arrays_parts
from fedcare.transport.codec import decode_arrays

__all__ = ["decode_checkpoint", "encode_checkpoint"]

HEADER = "__header__"
PARAMS = "params/"  # fedcare.strategy.checkpoint.state_to_record's prefix


def encode_checkpoint(
    strategy: Strategy, state: StrategyState, task_arrays: dict[str, ArrayRecord]
) -> EncodedParts:
    """One self-contained checkpoint: strategy state, per-task arrays and a JSON header."""
    record, header = state_to_record(strategy, state)
    record = ArrayRecord(  # the params are the round's params artifact: not written twice
        {k: v for k, v in record.items() if not k.startswith(PARAMS)}, copy=False
    )
    for name, arrays in task_arrays.items():
        record = record.merged(arrays.prefixed(f"task/{name}"))
    header = {**header, "task_arrays": sorted(task_arrays), "params": "artifact"}
    blob = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    return encode_arrays_parts(record.merged({HEADER: blob}))  # no serialized copy


def decode_checkpoint(
    strategy: Strategy, data: bytes, params: ArrayRecord | None = None
) -> StudyStart:
    """The state and task arrays saved by :func:`encode_checkpoint` (validated); ``params``
    are the round's params artifact's, which a state written since they are kept apart needs.

    Raises
    ------
    FedcareError
        If the checkpoint has no header, or needs ``params`` and none are given.
    """
    record = decode_arrays(data)
    if HEADER not in record:
        raise FedcareError("checkpoint has no header")
    header = json.loads(bytes(record[HEADER]).decode())
    names = list(header.get("task_arrays", []))
    task_arrays = {n: record.unprefixed(f"task/{n}") for n in names}
    rest = ArrayRecord(
        {k: v for k, v in record.items() if k != HEADER and not k.startswith("task/")}, copy=False
    )
    if header.get("params") == "artifact":
        if params is None:
            raise FedcareError("checkpoint keeps its params in the params artifact; none given")
        rest = rest.merged(params.prefixed(PARAMS.rstrip("/")))
    return StudyStart(state=state_from_record(strategy, rest, header), task_arrays=task_arrays)
