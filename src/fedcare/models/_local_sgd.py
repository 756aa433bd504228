"""The one local training loop for gradient-based numpy models.

Parameters are flattened into one float64 vector ``theta`` for the whole run, so penalties,
the FedProx term, the SCAFFOLD correction and the optimizer update are single vector
operations. Each step computes::

    g = grad_data(theta; batch) + l2 * mask * theta + prox_mu * (theta - theta_0) + correction

where ``mask`` is 0 on arrays named ``bias`` and 1 elsewhere, ``theta_0`` is the params passed
in (the FedProx centre) and ``correction`` is SCAFFOLD's ``c - c_i``. Then

* ``sgd``: ``v = momentum * v + g; theta -= lr * v`` (PyTorch's convention, no dampening; with
  ``momentum=0`` this is plain SGD, as SCAFFOLD's option II assumes);
* ``adam``: Adam with ``betas=(0.9, 0.999)``, ``eps=1e-8`` and bias correction, its state fresh
  at every call (the L2 term is added to the gradient, as in ``torch.optim.Adam``).

Minibatches come from one permutation of the rows per epoch drawn from ``rng`` (no
permutation for full-batch training); with ``max_steps`` exactly that many steps are taken,
cycling through epochs; the last batch of an epoch may be smaller.

With ``spec.checkpoint`` (:mod:`fedcare.models.checkpoint`) the loop saves ``theta``, the
optimizer's moments and step count, the step and the generator's state when it is due, and
resumes from saved progress: it replays the schedule up to the saved step (drawing the same
permutations, so the generator ends where it was when saving, which is checked), restores
``theta`` and the optimizer, and takes the remaining steps, ending exactly where an
uninterrupted run ends.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.models._validate import check_correction, is_bias
from fedcare.models.base import LocalTrainSpec
from fedcare.models.checkpoint import TrainingCheckpoint, TrainingProgress, rng_state
from fedcare.records.arrays import ArrayRecord

__all__ = ["LocalSGDResult", "LossAndGrad", "local_sgd", "minibatch_schedule"]

#: ``loss_and_grad(params, X, y, time) -> (mean data loss, gradients by name)``.
LossAndGrad = Callable[
    [Mapping[str, np.ndarray], np.ndarray, np.ndarray, "np.ndarray | None"],
    tuple[float, Mapping[str, np.ndarray]],
]

_ADAM_BETA1 = 0.9
_ADAM_BETA2 = 0.999
_ADAM_EPS = 1e-8


@dataclass(frozen=True)
class LocalSGDResult:
    """New parameters, the exact number of steps taken and the final data loss."""

    params: ArrayRecord
    num_steps: int
    loss: float


def minibatch_schedule(
    n: int, spec: LocalTrainSpec, rng: np.random.Generator
) -> Iterator[np.ndarray | None]:
    """Row indices of each step's minibatch; ``None`` means all rows in their given order.

    Parameters
    ----------
    n:
        Number of training rows (>= 1).
    spec:
        ``batch_size``, ``epochs`` and ``max_steps`` are read.
    rng:
        One ``rng.permutation(n)`` is drawn per epoch (none for full-batch training).

    Yields
    ------
    numpy.ndarray or None
        ``spec.max_steps`` batches if set, else ``spec.epochs * ceil(n / batch_size)``.
    """
    if n < 1:
        raise ModelError("cannot train on a dataset with no rows")
    full = spec.batch_size is None or spec.batch_size >= n
    size = n if full or spec.batch_size is None else spec.batch_size
    per_epoch = -(-n // size)
    total = spec.max_steps if spec.max_steps is not None else spec.epochs * per_epoch
    done = 0
    while done < total:
        if full:
            yield None
            done += 1
            continue
        perm = rng.permutation(n)
        for start in range(0, n, size):
            if done == total:
                return
            yield perm[start : start + size]
            done += 1


def _split(theta: np.ndarray, template: ArrayRecord) -> dict[str, np.ndarray]:
    """Views of ``theta`` shaped like the arrays of ``template``."""
    bounds = np.cumsum([v.size for v in template.values()])[:-1]
    pieces = np.split(theta, bounds)
    return {k: p.reshape(v.shape) for (k, v), p in zip(template.items(), pieces, strict=True)}


def _join(grads: Mapping[str, np.ndarray], template: ArrayRecord) -> np.ndarray:
    """Gradients by name flattened in ``template``'s order (float64)."""
    try:
        parts = [np.ravel(np.asarray(grads[k], dtype=np.float64)) for k in template]
    except KeyError as exc:
        raise ModelError(f"loss_and_grad returned no gradient for array {exc}") from None
    flat = np.concatenate(parts) if parts else np.zeros(0)
    if flat.shape != (template.num_params,):
        raise ModelError(
            f"loss_and_grad returned {flat.size} gradient values for {template.num_params} params"
        )
    return flat


def _penalty_mask(params: ArrayRecord) -> np.ndarray:
    """1.0 on entries of arrays the L2 penalty applies to, 0.0 on biases."""
    return np.concatenate([np.full(v.size, 0.0 if is_bias(k) else 1.0) for k, v in params.items()])


class _Optimizer:
    """Plain/momentum SGD or Adam on a flat vector; state lives for one ``fit`` call."""

    def __init__(self, spec: LocalTrainSpec, size: int) -> None:
        self._spec = spec
        self._m = np.zeros(size)
        self._v = np.zeros(size)
        self._t = 0

    def delta(self, grad: np.ndarray) -> np.ndarray:
        """The step to subtract from ``theta`` for gradient ``grad``."""
        spec = self._spec
        self._t += 1
        if spec.optimizer == "adam":
            self._m = _ADAM_BETA1 * self._m + (1 - _ADAM_BETA1) * grad
            self._v = _ADAM_BETA2 * self._v + (1 - _ADAM_BETA2) * grad * grad
            m_hat = self._m / (1 - _ADAM_BETA1**self._t)
            v_hat = self._v / (1 - _ADAM_BETA2**self._t)
            return spec.lr * m_hat / (np.sqrt(v_hat) + _ADAM_EPS)
        if spec.momentum:
            self._m = grad if self._t == 1 else spec.momentum * self._m + grad
            return spec.lr * self._m
        return spec.lr * grad

    def progress(
        self, step: int, theta: np.ndarray, rng_start: Mapping[str, Any], rng: np.random.Generator
    ) -> TrainingProgress:
        """A :class:`TrainingProgress` of ``theta`` and this optimizer after ``step`` steps."""
        arrays = {"theta": theta, "m": self._m, "v": self._v}
        meta = {"loop": _LOOP, "t": self._t}
        return TrainingProgress(step, rng_start, rng_state(rng), arrays, meta)

    def restore(self, progress: TrainingProgress) -> str | None:
        """Take the moments of ``progress``; or the reason they do not fit (nothing taken)."""
        arrays, meta = progress.arrays, progress.meta
        shapes = {k: getattr(arrays.get(k), "shape", None) for k in ("theta", "m", "v")}
        if meta.get("loop") != _LOOP or set(shapes.values()) != {self._m.shape}:
            return f"it is not this loop's ({meta.get('loop')!r}, arrays {shapes})"
        t = meta.get("t")
        if not isinstance(t, int) or not 0 <= t <= progress.step:
            return f"its optimizer step count {t!r} does not fit step {progress.step}"
        self._m, self._v = (np.array(arrays[k], dtype=np.float64) for k in ("m", "v"))
        self._t = t
        return None


_LOOP = "local_sgd/1"


def _resume(
    checkpoint: TrainingCheckpoint,
    optimizer: _Optimizer,
    n: int,
    spec: LocalTrainSpec,
    rng: np.random.Generator,
) -> tuple[np.ndarray | None, int, Iterator[np.ndarray | None]]:
    """Apply saved progress: ``(theta, step, schedule)`` with the schedule replayed up to
    ``step``; ``(None, 0, a fresh schedule)`` when there is none or it does not fit."""
    rng_start = rng_state(rng)
    schedule = minibatch_schedule(n, spec, rng)
    progress = checkpoint.load()
    if progress is None:
        return None, 0, schedule
    if dict(progress.rng_start) != rng_start:
        checkpoint.rejected("it was saved by a run drawing other random numbers")
        return None, 0, schedule
    before = rng.bit_generator.state
    replayed = sum(1 for _ in itertools.islice(schedule, progress.step))
    if replayed != progress.step or rng_state(rng) != dict(progress.rng_now):
        reason: str | None = f"its step {progress.step} is not in this run's schedule"
    else:
        reason = optimizer.restore(progress)
    if reason is not None:
        rng.bit_generator.state = before
        checkpoint.rejected(reason)
        return None, 0, minibatch_schedule(n, spec, rng)
    checkpoint.resumed(progress.step)
    return np.array(progress.arrays["theta"], dtype=np.float64), progress.step, schedule


def local_sgd(
    params: ArrayRecord,
    loss_and_grad: LossAndGrad,
    data: Dataset,
    spec: LocalTrainSpec,
    rng: np.random.Generator,
) -> LocalSGDResult:
    """Train ``params`` on ``data`` with minibatch gradient steps as ``spec`` says.

    Parameters
    ----------
    params:
        Starting parameters (float arrays); also the FedProx centre. Not modified.
    loss_and_grad:
        Mean data loss of a batch and its gradient by array name (no penalty terms).
    data:
        Training rows, already validated by the adapter.
    spec:
        Local training hyper-parameters (see the module docstring for the update rule).
    rng:
        Source of the per-epoch permutations.

    Returns
    -------
    LocalSGDResult
        Parameters with the names, order and dtypes of ``params``; the number of steps; the
        data loss of the final parameters on all of ``data``.

    Raises
    ------
    ModelError
        If the correction does not match ``params`` or training diverges (non-finite values).
    """
    theta0 = params.flatten()
    correction = np.zeros_like(theta0)
    if spec.correction is not None:
        check_correction(params, spec.correction)
        correction = ArrayRecord(spec.correction, copy=False).flatten()
    decay = spec.l2 * _penalty_mask(params) if spec.l2 else np.zeros_like(theta0)
    optimizer = _Optimizer(spec, theta0.size)
    theta = theta0.copy()
    steps = 0
    checkpoint = spec.checkpoint
    start = rng_state(rng) if checkpoint is not None else {}
    schedule = minibatch_schedule(len(data), spec, rng)
    if checkpoint is not None:  # the fresh schedule is not started: it has drawn nothing
        saved, steps, schedule = _resume(checkpoint, optimizer, len(data), spec, rng)
        theta = theta if saved is None else saved
    for idx in schedule:
        batch = data if idx is None else data.take(idx)
        _, grads = loss_and_grad(_split(theta, params), batch.X, batch.y, batch.time)
        grad = _join(grads, params) + decay * theta + correction
        if spec.prox_mu:
            grad = grad + spec.prox_mu * (theta - theta0)
        theta = theta - optimizer.delta(grad)
        steps += 1
        if not np.isfinite(theta).all():
            raise ModelError(
                f"local training diverged at step {steps} (non-finite parameters); "
                f"lower the learning rate (lr={spec.lr})"
            )
        if checkpoint is not None and checkpoint.due():
            checkpoint.save(optimizer.progress(steps, theta, start, rng))
    loss, _ = loss_and_grad(_split(theta, params), data.X, data.y, data.time)
    return LocalSGDResult(params=params.unflatten(theta), num_steps=steps, loss=float(loss))
