"""A round's checkpoint keeps the params once (the params artifact), and old ones still read."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.coordinator.checkpoint import decode_checkpoint, encode_checkpoint
from fedcare.errors import FedcareError
from fedcare.records.arrays import ArrayRecord
from fedcare.strategy.checkpoint import state_to_record
from fedcare.strategy.fedopt import FedAdam
from fedcare.transport.arrays_wire import decode_arrays, encode_arrays


def _state() -> tuple[FedAdam, object, ArrayRecord]:
    strategy = FedAdam()
    params = ArrayRecord({"w": np.arange(6.0).reshape(2, 3), "b": np.ones(2)})
    return strategy, strategy.init_state(params), params


def test_the_state_artifact_does_not_hold_the_params_again() -> None:
    strategy, state, params = _state()
    parts = encode_checkpoint(strategy, state, {"stats": ArrayRecord({"mean": np.zeros(3)})})
    data = b"".join(bytes(p) for p in parts.parts)
    assert not any(k.startswith("params/") for k in decode_arrays(data))
    start = decode_checkpoint(strategy, data, params)
    assert start.state.params == params and start.task_arrays["stats"]["mean"].shape == (3,)
    with pytest.raises(FedcareError, match="keeps its params in the params artifact"):
        decode_checkpoint(strategy, data)


def test_a_checkpoint_that_holds_its_params_still_reads() -> None:
    import json

    strategy, state, params = _state()
    record, header = state_to_record(strategy, state)  # as checkpoints were written before
    blob = np.frombuffer(json.dumps({**header, "task_arrays": []}).encode(), dtype=np.uint8)
    old = encode_arrays(record.merged({"__header__": blob}))
    assert decode_checkpoint(strategy, old).state.params == params
