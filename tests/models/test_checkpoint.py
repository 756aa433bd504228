"""Training checkpoints in the numpy loop and the torch adapter: an interrupted run resumed from
its last checkpoint ends exactly where an uninterrupted run ends (fedcare.models.checkpoint).

The checkpoint here is in memory and "crashes" the run by raising after its n-th save, as a
killed worker would stop; the site's file store is tested in tests/site/test_train_checkpoint.py.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.models.base import LocalTrainSpec, ModelAdapter
from fedcare.models.checkpoint import TrainingCheckpoint, TrainingProgress
from fedcare.models.logistic import LogisticRegression
from fedcare.models.numpy_model import NumpyModel
from fedcare.records.arrays import ArrayRecord
from tests.models.conftest import make_binary


class Crash(Exception):
    """What a SIGKILL is to the loop: it stops right there."""


class MemoryCheckpoint(TrainingCheckpoint):
    """Due every ``every`` steps; raises :class:`Crash` after its ``crash_after``-th save."""

    def __init__(self, every: int, crash_after: int | None = None) -> None:
        super().__init__()
        self.every, self.crash_after = every, crash_after
        self.saved: TrainingProgress | None = None
        self.saves, self.calls, self.reasons = 0, 0, list[str]()

    def load(self) -> TrainingProgress | None:
        return self.saved

    def due(self) -> bool:
        self.calls += 1
        return self.calls % self.every == 0

    def save(self, progress: TrainingProgress) -> None:
        self.saved = copy.deepcopy(progress)
        self.saves += 1
        if self.crash_after is not None and self.saves >= self.crash_after:
            raise Crash

    def rejected(self, reason: str) -> None:
        self.reasons.append(reason)
        super().rejected(reason)


def interrupted_then_resumed(
    model: ModelAdapter, start: ArrayRecord, data: Dataset, spec: LocalTrainSpec, crash_after: int
) -> tuple[ArrayRecord, MemoryCheckpoint, TrainingProgress]:
    """Train until the checkpoint's ``crash_after``-th save, then again from the checkpoint:
    the resumed run's params, its checkpoint and the progress it resumed from."""
    crashing = MemoryCheckpoint(every=3, crash_after=crash_after)
    with pytest.raises(Crash):
        model.fit(start, data, replace(spec, checkpoint=crashing), np.random.default_rng(7))
    resumed = MemoryCheckpoint(every=3)
    resumed.saved = crashing.saved
    result = model.fit(start, data, replace(spec, checkpoint=resumed), np.random.default_rng(7))
    assert crashing.saved is not None
    return result.params, resumed, crashing.saved


def logistic_gradient(
    params: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray
) -> dict[str, np.ndarray]:
    err = 1 / (1 + np.exp(-(X @ params["w"] + params["b"][0]))) - y
    return {"w": X.T @ err / len(X), "b": np.array([err.mean()])}


NUMPY_MODEL = NumpyModel(
    lambda shape, rng: {"w": np.zeros(shape[0]), "b": np.zeros(1)},
    lambda params, X: 1 / (1 + np.exp(-(X @ params["w"] + params["b"][0]))),
    logistic_gradient,
    task="binary",
)


@pytest.mark.parametrize(
    "spec",
    [
        LocalTrainSpec(epochs=4, batch_size=16, lr=0.3),  # mid-epoch and epoch-end saves
        LocalTrainSpec(max_steps=29, batch_size=50, optimizer="adam", lr=0.05, l2=0.01),
        LocalTrainSpec(epochs=3, batch_size=7, momentum=0.9, lr=0.05, prox_mu=0.1),
        LocalTrainSpec(max_steps=20, lr=0.5),  # full batch: no permutations at all
    ],
    ids=["sgd", "adam", "momentum-prox", "full-batch"],
)
@pytest.mark.parametrize("crash_after", [1, 3])
@pytest.mark.parametrize("model", [LogisticRegression(), NUMPY_MODEL], ids=["linear", "numpy"])
def test_the_numpy_loop_resumes_to_the_uninterrupted_result(
    model: ModelAdapter, spec: LocalTrainSpec, crash_after: int
) -> None:
    data = make_binary(n=120, d=5)
    start = model.init_params((5,), np.random.default_rng(0))
    plain = model.fit(start, data, spec, np.random.default_rng(7)).params
    resumed, checkpoint, _ = interrupted_then_resumed(model, start, data, spec, crash_after)
    assert checkpoint.resumed_from_step == 3 * crash_after
    assert checkpoint.reasons == []
    for name in plain:  # bitwise: the same operations on the same numbers
        np.testing.assert_array_equal(resumed[name], plain[name])


def test_progress_holds_the_step_the_generator_state_and_the_optimizer() -> None:
    data = make_binary(n=120, d=5)
    spec = LocalTrainSpec(epochs=2, batch_size=16, optimizer="adam", lr=0.05)
    checkpoint = MemoryCheckpoint(every=5, crash_after=2)
    with pytest.raises(Crash):
        LogisticRegression().fit(
            LogisticRegression().init_params((5,), np.random.default_rng(0)),
            data,
            replace(spec, checkpoint=checkpoint),
            np.random.default_rng(7),
        )
    saved = checkpoint.saved
    assert saved is not None and saved.step == 10
    assert set(saved.arrays) == {"theta", "m", "v"} and saved.meta["t"] == 10
    assert saved.rng_start == np.random.default_rng(7).bit_generator.state
    rng = np.random.default_rng(7)
    rng.permutation(120), rng.permutation(120)  # step 10 is in the second epoch of 8 steps
    assert saved.rng_now == rng.bit_generator.state


def test_progress_of_another_random_stream_is_rejected_and_training_starts_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = make_binary(n=120, d=5)
    spec = LocalTrainSpec(epochs=2, batch_size=16, lr=0.3)
    start = LogisticRegression().init_params((5,), np.random.default_rng(0))
    crashing = MemoryCheckpoint(every=4, crash_after=1)
    with pytest.raises(Crash):
        LogisticRegression().fit(
            start, data, replace(spec, checkpoint=crashing), np.random.default_rng(8)
        )
    other = MemoryCheckpoint(every=1000)
    other.saved = crashing.saved
    with caplog.at_level(logging.WARNING, logger="fedcare.models.checkpoint"):
        got = LogisticRegression().fit(
            start, data, replace(spec, checkpoint=other), np.random.default_rng(7)
        )
    plain = LogisticRegression().fit(start, data, spec, np.random.default_rng(7))
    assert other.resumed_from_step is None
    assert other.reasons == ["it was saved by a run drawing other random numbers"]
    assert "training checkpoint not used" in caplog.text
    np.testing.assert_array_equal(got.params["weight"], plain.params["weight"])


def test_progress_that_does_not_fit_the_model_is_rejected() -> None:
    data = make_binary(n=120, d=5)
    spec = LocalTrainSpec(epochs=2, batch_size=16, lr=0.3)
    start = LogisticRegression().init_params((5,), np.random.default_rng(0))
    crashing = MemoryCheckpoint(every=4, crash_after=1)
    with pytest.raises(Crash):
        LogisticRegression().fit(
            start, data, replace(spec, checkpoint=crashing), np.random.default_rng(7)
        )
    assert crashing.saved is not None
    bad = MemoryCheckpoint(every=1000)
    bad.saved = replace(crashing.saved, arrays={**crashing.saved.arrays, "m": np.zeros(3)})
    got = LogisticRegression().fit(
        start, data, replace(spec, checkpoint=bad), np.random.default_rng(7)
    )
    plain = LogisticRegression().fit(start, data, spec, np.random.default_rng(7))
    assert bad.resumed_from_step is None and "not this loop's" in bad.reasons[0]
    np.testing.assert_array_equal(got.params["weight"], plain.params["weight"])
    late = MemoryCheckpoint(every=1000)
    late.saved = replace(crashing.saved, step=10_000)
    LogisticRegression().fit(start, data, replace(spec, checkpoint=late), np.random.default_rng(7))
    assert late.reasons == ["its step 10000 is not in this run's schedule"]


@pytest.mark.torch
@pytest.mark.parametrize(
    "spec",
    [
        LocalTrainSpec(epochs=3, batch_size=16, lr=0.1, momentum=0.9, l2=0.01),
        LocalTrainSpec(max_steps=25, batch_size=32, optimizer="adam", lr=0.01, prox_mu=0.1),
    ],
    ids=["sgd-momentum", "adam-prox"],
)
def test_the_torch_loop_resumes_with_dropout_to_the_uninterrupted_result(
    spec: LocalTrainSpec,
) -> None:
    pytest.importorskip("torch")
    from fedcare.models.torch import make_torch_adapter
    from fedcare.models.torch_nets import mlp

    model = make_torch_adapter(partial(mlp, hidden=(16, 8), dropout=0.3), "binary")
    data = make_binary(n=120, d=5)
    start = model.init_params((5,), np.random.default_rng(0))
    plain = model.fit(start, data, spec, np.random.default_rng(7)).params
    resumed, checkpoint, saved = interrupted_then_resumed(model, start, data, spec, crash_after=2)
    assert checkpoint.resumed_from_step == 6 and checkpoint.reasons == []
    assert "rng/torch" in saved.arrays
    assert any(k.startswith("optim/") for k in saved.arrays)
    for name in plain:
        np.testing.assert_allclose(resumed[name], plain[name], rtol=0, atol=1e-6)
    # without the saved torch generator, dropout would draw other masks: the result differs
    no_rng = MemoryCheckpoint(every=1000)
    no_rng.saved = replace(
        saved, arrays={**saved.arrays, "rng/torch": np.array(model_rng_state_after_seed(0))}
    )
    other = model.fit(start, data, replace(spec, checkpoint=no_rng), np.random.default_rng(7))
    assert no_rng.resumed_from_step == 6
    assert max(np.abs(other.params[k] - plain[k]).max() for k in plain) > 1e-4


def model_rng_state_after_seed(seed: int) -> np.ndarray:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.get_rng_state().numpy().copy()


@pytest.mark.torch
def test_torch_progress_of_another_model_is_rejected_and_nothing_changes() -> None:
    pytest.importorskip("torch")
    from fedcare.models.torch import make_torch_adapter
    from fedcare.models.torch_nets import mlp

    small = make_torch_adapter(partial(mlp, hidden=(4,)), "binary")
    big = make_torch_adapter(partial(mlp, hidden=(8,)), "binary")
    data = make_binary(n=120, d=5)
    spec = LocalTrainSpec(epochs=2, batch_size=16, lr=0.1, momentum=0.9)
    crashing = MemoryCheckpoint(every=3, crash_after=1)
    with pytest.raises(Crash):
        small.fit(
            small.init_params((5,), np.random.default_rng(0)),
            data,
            replace(spec, checkpoint=crashing),
            np.random.default_rng(7),
        )
    start = big.init_params((5,), np.random.default_rng(0))
    wrong = MemoryCheckpoint(every=1000)
    wrong.saved = crashing.saved
    got = big.fit(start, data, replace(spec, checkpoint=wrong), np.random.default_rng(7))
    plain = big.fit(start, data, spec, np.random.default_rng(7))
    assert wrong.resumed_from_step is None
    assert "does not fit the model or optimizer" in wrong.reasons[0]
    for name in plain.params:
        np.testing.assert_array_equal(got.params[name], plain.params[name])


def _sgd_keeping_a_bfloat16_average(parameters: list[Any], spec: LocalTrainSpec) -> Any:
    """A custom optimizer whose state holds a tensor numpy cannot represent."""
    import torch

    class Averaging(torch.optim.SGD):
        def step(self, closure: Any = None) -> Any:
            loss = super().step(closure)
            for group in self.param_groups:
                for p in group["params"]:
                    self.state[p]["average"] = p.detach().to(torch.bfloat16)
            return loss

    return Averaging(parameters, lr=spec.lr)


@pytest.mark.torch
def test_torch_state_numpy_cannot_hold_costs_the_checkpoint_not_the_training(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("torch")
    from fedcare.models.torch import make_torch_adapter
    from fedcare.models.torch_nets import mlp

    model = make_torch_adapter(
        partial(mlp, hidden=(4,)), "binary", optimizer=_sgd_keeping_a_bfloat16_average
    )
    data = make_binary(n=120, d=5)
    spec = LocalTrainSpec(epochs=2, batch_size=16, lr=0.1)
    start = model.init_params((5,), np.random.default_rng(0))
    checkpoint = MemoryCheckpoint(every=2)
    with caplog.at_level(logging.WARNING, logger="fedcare.models.torch_checkpoint"):
        got = model.fit(start, data, replace(spec, checkpoint=checkpoint), np.random.default_rng(7))
    plain = model.fit(start, data, spec, np.random.default_rng(7))
    assert checkpoint.saves == 0 and "cannot be checkpointed" in caplog.text
    assert caplog.text.count("cannot be checkpointed") == 1  # said once, then not tried again
    for name in plain.params:
        np.testing.assert_array_equal(got.params[name], plain.params[name])
