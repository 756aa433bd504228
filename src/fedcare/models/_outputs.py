"""What a ``predict`` must return per task, and the default loss of those predictions.

Shared by the adapters that take a researcher's prediction function or estimator
(:class:`~fedcare.models.numpy_model.NumpyModel`,
:class:`~fedcare.models.sklearn_model.SklearnModel`): their outputs are checked here before
they reach the metrics, and their loss, when none is given, is the task's loss of the
predictions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcare.data.base import Dataset, TaskType
from fedcare.errors import ModelError
from fedcare.models.cox import cox_loss_and_eta_grad

__all__ = ["check_predictions", "prediction_loss", "target_array"]

_EPS = 1e-12


def check_predictions(task: TaskType, out: Any, n: int, *, model: str) -> np.ndarray:
    """``out`` as a float64 array after checking it is what ``predict`` returns for ``task``.

    ``binary``: ``(n,)`` in ``[0, 1]``; ``multiclass``: ``(n, K)`` with ``K >= 2``, entries in
    ``[0, 1]`` and rows summing to 1 (within 1e-6); ``multilabel``: ``(n, L)`` in ``[0, 1]``;
    ``regression`` and ``survival``: ``(n,)``. All finite.

    Raises
    ------
    ModelError
        Naming the model, the task and what is wrong.
    """
    arr = np.asarray(out, dtype=np.float64)
    matrix = task in ("multiclass", "multilabel")
    if (matrix and (arr.ndim != 2 or arr.shape[0] != n)) or (not matrix and arr.shape != (n,)):
        want = f"({n}, K)" if matrix else f"({n},)"
        raise ModelError(f"{model}: {task} predictions must have shape {want}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ModelError(f"{model}: predictions contain NaN or inf values")
    if task in ("binary", "multiclass", "multilabel") and ((arr < 0) | (arr > 1)).any():
        raise ModelError(f"{model}: {task} predictions must be probabilities in [0, 1]")
    if task == "multiclass":
        if arr.shape[1] < 2:
            raise ModelError(f"{model}: multiclass predictions need K >= 2 columns")
        if n and not np.allclose(arr.sum(axis=1), 1.0, atol=1e-6):
            raise ModelError(f"{model}: multiclass predictions must sum to 1 in every row")
    return arr


def target_array(task: TaskType, data: Dataset) -> np.ndarray:
    """The labels a researcher's function receives: ``y``, or ``[event, time]`` for survival."""
    if task == "survival":
        return np.column_stack([np.asarray(data.y, np.float64), np.asarray(data.time, np.float64)])
    if task == "multiclass":
        return np.asarray(data.y, dtype=np.int64)
    return np.asarray(data.y, dtype=np.float64)


def prediction_loss(task: TaskType, pred: np.ndarray, data: Dataset) -> float:
    """The task's mean loss of checked predictions ``pred`` on ``data``.

    Binary and multilabel: cross-entropy (mean over every label); multiclass: cross-entropy of
    the true class; regression: mean squared error; survival: the Breslow negative partial
    log-likelihood per event of the risk scores. Probabilities are clipped to
    ``[1e-12, 1 - 1e-12]``.
    """
    y = np.asarray(data.y)
    if task in ("binary", "multilabel"):
        p = np.clip(pred, _EPS, 1 - _EPS)
        t = y.astype(np.float64)
        return float(-np.mean(t * np.log(p) + (1 - t) * np.log1p(-p)))
    if task == "multiclass":
        labels = y.astype(np.int64)
        if labels.size and labels.max() >= pred.shape[1]:
            raise ModelError(
                f"class index {int(labels.max())} is out of range for {pred.shape[1]} classes"
            )
        picked = pred[np.arange(len(labels)), labels]
        return float(-np.mean(np.log(np.clip(picked, _EPS, 1.0))))
    if task == "regression":
        return float(np.mean((pred - y.astype(np.float64)) ** 2))
    assert data.time is not None
    return cox_loss_and_eta_grad(pred, y, data.time)[0]
