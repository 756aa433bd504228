"""What the torch adapter does differently per task: targets, default loss, output, data loss.

One :class:`TorchTask` per task of :data:`fedcare.records.tasks.TASKS`. The adapter
(:mod:`fedcare.models.torch`) runs the same loop for all of them and asks the task object to

* turn a batch's labels into the *target tensor* a loss receives (also what a custom
  ``loss(outputs, target)`` receives): ``binary`` float32 ``(n,)`` 0/1; ``multiclass`` int64
  ``(n,)`` class indices; ``multilabel`` float32 ``(n, L)`` 0/1; ``regression`` float32 ``(n,)``;
  ``survival`` float32 ``(n, 2)`` with columns ``event`` (0/1) and ``time``;
* shape the module's raw outputs: ``(n,)`` for binary, regression and survival (one output per
  example), ``(n, K)`` for multiclass and multilabel;
* compute the default loss: BCE-with-logits (binary, multilabel: mean over every label),
  cross-entropy (multiclass), mean squared error (regression), the Breslow negative partial
  log-likelihood per event of the batch (survival, 0 for a batch without events);
* map raw outputs to what :meth:`~fedcare.models.base.ModelAdapter.predict` returns: sigmoid
  (binary, multilabel), softmax (multiclass), identity (regression, survival).

Nothing here imports torch at module import; every function receives the ``torch`` module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from scipy.special import expit, log_softmax, softmax

from fedcare.data.base import TaskType
from fedcare.errors import ModelError
from fedcare.models.cox import cox_loss_and_eta_grad, risk_set_bounds
from fedcare.models.logistic import bce_from_logits

__all__ = ["TASK_HEADS", "TorchTask", "numpy_data_loss", "target_tensor"]


@dataclass(frozen=True)
class TorchTask:
    """The per-task pieces of the torch adapter (see the module docstring)."""

    task: TaskType
    #: ``True``: outputs are ``(n, K)``; ``False``: one output per example, ``(n,)``.
    matrix: bool
    #: ``(torch, outputs, target) -> scalar loss tensor``.
    default_loss: Callable[[ModuleType, Any, Any], Any]
    #: Raw outputs (float64 numpy) -> ``predict``'s return value.
    activate: Callable[[np.ndarray], np.ndarray]

    def shape_outputs(self, out: Any, n: int, *, model: str) -> Any:
        """``out`` as ``(n,)`` or ``(n, K)``; :class:`ModelError` when it cannot be."""
        if out.ndim == 0 or out.shape[0] != n:
            raise ModelError(f"{model}: module returned shape {tuple(out.shape)} for {n} rows")
        if self.matrix:
            flat = out.reshape(n, -1) if n else out.reshape(0, out.shape[-1] if out.ndim > 1 else 1)
            if n and self.task == "multiclass" and flat.shape[1] < 2:
                raise ModelError(
                    f"{model}: a multiclass module must return (n, K) logits with K >= 2, got "
                    f"shape {tuple(out.shape)}"
                )
            return flat
        if out.numel() != n:
            raise ModelError(
                f"{model}: a {self.task} module must return one output per example, got shape "
                f"{tuple(out.shape)} for {n} rows"
            )
        return out.reshape(n)


def target_tensor(torch: ModuleType, task: TaskType, y: np.ndarray, time: Any) -> Any:
    """The target tensor a loss receives for labels ``y`` (and ``time``, survival only)."""
    if task == "multiclass":
        return torch.from_numpy(np.asarray(y, dtype=np.int64))
    if task == "survival":
        both = np.column_stack([np.asarray(y, np.float32), np.asarray(time, np.float32)])
        return torch.from_numpy(both)
    return torch.from_numpy(np.asarray(y, dtype=np.float32))


def _bce(torch: ModuleType, out: Any, target: Any) -> Any:
    return torch.nn.functional.binary_cross_entropy_with_logits(out, target)


def _cross_entropy(torch: ModuleType, out: Any, target: Any) -> Any:
    return torch.nn.functional.cross_entropy(out, target)


def _mse(torch: ModuleType, out: Any, target: Any) -> Any:
    return torch.nn.functional.mse_loss(out, target)


def _breslow(torch: ModuleType, out: Any, target: Any) -> Any:
    """Breslow negative partial log-likelihood per event of one batch (0 without events)."""
    event = target[:, 0].detach().cpu().numpy().astype(np.float64)
    time = target[:, 1].detach().cpu().numpy().astype(np.float64)
    events = float(event.sum())
    if events == 0:
        return out.sum() * 0.0
    order = np.argsort(-time, kind="stable")
    _, last = risk_set_bounds(time[order])
    eta = out[torch.from_numpy(order)]
    log_risk = torch.logcumsumexp(eta, dim=0)[torch.from_numpy(last)]
    d = torch.from_numpy(event[order].astype(np.float32)).to(eta.dtype)
    return -(d * (eta - log_risk)).sum() / events


def _probabilities(raw: np.ndarray) -> np.ndarray:
    return np.asarray(softmax(raw, axis=1), dtype=np.float64)


def _sigmoid(raw: np.ndarray) -> np.ndarray:
    return np.asarray(expit(raw), dtype=np.float64)


def _identity(raw: np.ndarray) -> np.ndarray:
    return np.asarray(raw, dtype=np.float64)


#: Task -> its pieces.
TASK_HEADS: dict[str, TorchTask] = {
    "binary": TorchTask("binary", False, _bce, _sigmoid),
    "multiclass": TorchTask("multiclass", True, _cross_entropy, _probabilities),
    "multilabel": TorchTask("multilabel", True, _bce, _sigmoid),
    "regression": TorchTask("regression", False, _mse, _identity),
    "survival": TorchTask("survival", False, _breslow, _identity),
}


def numpy_data_loss(task: TaskType, raw: np.ndarray, y: np.ndarray, time: Any) -> float:
    """The default loss of raw outputs ``raw`` on all rows, in float64 numpy."""
    if task == "binary":
        return bce_from_logits(raw, y)
    if task == "multilabel":
        return bce_from_logits(raw.reshape(-1), np.asarray(y).reshape(-1))
    if task == "multiclass":
        labels = np.asarray(y, dtype=np.int64)
        if labels.size and labels.max() >= raw.shape[1]:
            raise ModelError(
                f"class index {int(labels.max())} is out of range for {raw.shape[1]} outputs"
            )
        logp = log_softmax(raw, axis=1)
        return float(-np.mean(logp[np.arange(len(labels)), labels]))
    if task == "regression":
        return float(np.mean((raw - np.asarray(y, dtype=np.float64)) ** 2))
    return cox_loss_and_eta_grad(raw, y, time)[0]
