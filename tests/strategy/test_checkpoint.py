import numpy as np
import pytest

from fedcare.errors import ValidationError
from fedcare.records import ArrayRecord
from fedcare.strategy import STRATEGIES, RoundConfig, build_strategy, run_rounds
from fedcare.strategy.checkpoint import state_from_record, state_to_record
from fedcare.transport.inmemory import InMemoryGrid

from .helpers import fixed_site


def grid() -> InMemoryGrid:
    def site(i: int):
        base = fixed_site({"w": [float(i), -1.0]}, i + 1)
        scaffold = fixed_site({"delta/w": [float(i), -1.0], "control/w": [0.1 * i, 0.2]}, i + 1)
        return lambda task: (scaffold if "control" in task.arrays else base)(task)

    return InMemoryGrid({f"s{i}": site(i) for i in range(4)})


#: The round loop's strategies (fedbuff runs asynchronously: its open tasks, their staleness and
#: its buffer are not part of a checkpoint, so a resumed fedbuff study sends fresh tasks of its
#: last persisted version; tests/deployment/test_coordinator_restart.py).
SYNCHRONOUS = sorted(n for n, cls in STRATEGIES.items() if not getattr(cls, "asynchronous", False))


@pytest.mark.parametrize("name", SYNCHRONOUS)
def test_resume_from_checkpoint_equals_uninterrupted_run(name: str) -> None:
    options = {"fedprox": {"mu": 0.1}}.get(name, {})
    strategy = build_strategy(name, options, fraction=0.5)
    params = ArrayRecord({"w": np.zeros(2)})
    cfg = RoundConfig(study_id="c", num_rounds=6, seed=5, evaluate_every=0)
    full, _ = run_rounds(grid(), strategy, strategy.init_state(params), cfg)

    half = RoundConfig(study_id="c", num_rounds=3, seed=5, evaluate_every=0)
    mid, _ = run_rounds(grid(), strategy, strategy.init_state(params), half)
    record, header = state_to_record(strategy, mid)
    restored = state_from_record(build_strategy(name, options, fraction=0.5), record, header)
    resumed, _ = run_rounds(grid(), strategy, restored, cfg, start_round=4)
    np.testing.assert_array_equal(full.params["w"], resumed.params["w"])
    for group in full.arrays:
        assert full.arrays[group] == resumed.arrays[group]


def test_checkpoint_for_another_strategy_or_shape_is_refused() -> None:
    fedadam = build_strategy("fedadam")
    state = fedadam.init_state(ArrayRecord({"w": np.zeros(2)}))
    record, header = state_to_record(fedadam, state)
    with pytest.raises(ValidationError, match="strategy 'fedadam', not 'fedyogi'"):
        state_from_record(build_strategy("fedyogi"), record, header)
    with pytest.raises(ValidationError, match="version 99"):
        state_from_record(fedadam, record, {**header, "version": 99})
    bad = ArrayRecord({**dict(record), "optimizer/m/w": np.zeros(3)})
    with pytest.raises(ValidationError, match="optimizer/m"):
        state_from_record(fedadam, bad, header)
