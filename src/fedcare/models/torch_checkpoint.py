"""Checkpoints of the torch adapter's training loop (:mod:`fedcare.models.checkpoint`).

:func:`resumable` wraps the loop's list of minibatches: it first applies saved progress (the
module's state dict, the optimizer's per-parameter state, torch's CPU generator and, on
CUDA, the device's generator) and skips the steps already taken, then, after each step the
loop takes, saves progress when the checkpoint says it is due. The minibatches themselves are
drawn from the numpy generator before training, so progress applies only to a run whose
generator started in the same state (``rng_start``); torch's generator state restores dropout.

Arrays are named ``model/<state-dict key>``, ``optim/<parameter index>/<state key>`` and
``rng/torch`` (``rng/cuda``); the optimizer's non-tensor state goes to ``meta``. The optimizer's
``param_groups`` are not saved: they follow from the task's spec, which the checkpoint's key
covers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from fedcare.models.checkpoint import TrainingCheckpoint, TrainingProgress, rng_state

__all__ = ["resumable"]

T = TypeVar("T")
log = logging.getLogger(__name__)
_LOOP = "torch/1"


def resumable(
    checkpoint: TrainingCheckpoint | None,
    batches: Sequence[T],
    torch: ModuleType,
    module: Any,
    optimizer: Any,
    rng: np.random.Generator,
    rng_start: Mapping[str, Any],
) -> Iterator[T]:
    """The minibatches still to train on, saving progress between steps when due.

    Parameters
    ----------
    checkpoint:
        Where progress is kept; ``None``: all of ``batches``, nothing saved.
    batches:
        Every step's minibatch, in order.
    torch, module, optimizer:
        The loop's torch, module (already on its device) and optimizer, before any step.
    rng, rng_start:
        The numpy generator the batches came from, and its ``bit_generator.state`` before it
        drew them.

    Returns
    -------
    Iterator
        The batches from the resumed step on; progress is saved after the loop's body ran.
    """
    if checkpoint is None:
        return iter(batches)
    return _steps(checkpoint, batches, torch, module, optimizer, rng, rng_state(rng_start))


def _steps(
    checkpoint: TrainingCheckpoint,
    batches: Sequence[T],
    torch: ModuleType,
    module: Any,
    optimizer: Any,
    rng: np.random.Generator,
    rng_start: dict[str, Any],
) -> Iterator[T]:
    first = _resume(checkpoint, len(batches), torch, module, optimizer, rng_start)
    saving = True
    for step in range(first, len(batches)):
        yield batches[step]
        if saving and step + 1 < len(batches) and checkpoint.due():
            try:
                progress = _progress(step + 1, torch, module, optimizer, rng, rng_start)
            except (TypeError, RuntimeError) as err:  # e.g. a dtype numpy cannot hold
                log.warning("training progress cannot be checkpointed (%s); training goes on", err)
                saving = False
                continue
            checkpoint.save(progress)


def _device(torch: ModuleType, module: Any) -> Any:
    return next(module.parameters(), torch.empty(0)).device


def _progress(
    step: int,
    torch: ModuleType,
    module: Any,
    optimizer: Any,
    rng: np.random.Generator,
    rng_start: dict[str, Any],
) -> TrainingProgress:
    arrays = {f"model/{k}": _numpy(v) for k, v in module.state_dict().items()}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                arrays[f"optim/{index}/{key}"] = _numpy(value)
            else:
                scalars.setdefault(str(index), {})[key] = value
    arrays["rng/torch"] = _numpy(torch.get_rng_state())
    device = _device(torch, module)
    if device.type == "cuda":
        arrays["rng/cuda"] = _numpy(torch.cuda.get_rng_state(device))
    meta = {"loop": _LOOP, "optim_scalars": scalars}
    return TrainingProgress(step, rng_start, rng_state(rng), arrays, meta)


def _numpy(tensor: Any) -> np.ndarray:
    return np.array(tensor.detach().cpu().numpy())  # a copy: the loop goes on changing it


def _resume(
    checkpoint: TrainingCheckpoint,
    total: int,
    torch: ModuleType,
    module: Any,
    optimizer: Any,
    rng_start: dict[str, Any],
) -> int:
    """Apply saved progress and return its step; 0 (nothing changed) without usable progress."""
    progress = checkpoint.load()
    if progress is None:
        return 0
    reason = None
    if progress.meta.get("loop") != _LOOP:
        reason = f"it is not this loop's ({progress.meta.get('loop')!r})"
    elif dict(progress.rng_start) != rng_start:
        reason = "it was saved by a run drawing other random numbers"
    elif not 0 < progress.step < total:
        reason = f"its step {progress.step} is not within this run's {total} steps"
    if reason is None:
        fresh = {k: v.clone() for k, v in module.state_dict().items()}
        try:
            _apply(progress, torch, module, optimizer)
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            module.load_state_dict(fresh)
            optimizer.state.clear()
            reason = f"it does not fit the model or optimizer ({' '.join(str(err).split())[:300]})"
    if reason is not None:
        checkpoint.rejected(reason)
        return 0
    checkpoint.resumed(progress.step)
    return progress.step


def _apply(progress: TrainingProgress, torch: ModuleType, module: Any, optimizer: Any) -> None:
    arrays = progress.arrays
    model = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.items()})
    state: dict[int, dict[str, Any]] = {}
    for name, value in arrays.items():
        if name.startswith("optim/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = torch.from_numpy(np.array(value))
    for index, values in dict(progress.meta.get("optim_scalars") or {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(torch.from_numpy(np.array(arrays["rng/torch"], dtype=np.uint8)))
    device = _device(torch, module)
    if device.type == "cuda" and "rng/cuda" in arrays:
        cuda = np.array(arrays["rng/cuda"], dtype=np.uint8)
        torch.cuda.set_rng_state(torch.from_numpy(cuda), device)
