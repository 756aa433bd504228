"""Logistic regression in numpy: ``P(y=1 | x) = sigmoid(x @ weight + bias)``.

The training loss is the mean binary cross-entropy, written stably as
``logaddexp(0, z) - y * z`` for logits ``z``. With ``spec.l2 = 1 / (C * n)`` full-batch
training converges to scikit-learn's ``LogisticRegression(C=C)`` on the same ``n`` rows
(both leave the intercept unpenalized).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
from scipy.special import expit

from fedcare.data.base import Dataset, TaskType
from fedcare.errors import ModelError
from fedcare.models._local_sgd import local_sgd
from fedcare.models._validate import check_features, check_params, check_targets
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.records.arrays import ArrayRecord

__all__ = ["LogisticRegression", "bce_from_logits"]


def bce_from_logits(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of labels ``y`` for logits ``z`` (stable for any ``z``)."""
    z = np.asarray(z, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - np.asarray(y, dtype=np.float64) * z))


def _flat(X: np.ndarray) -> np.ndarray:
    return np.asarray(X, dtype=np.float64).reshape(len(X), -1)


def logistic_loss_and_grad(
    params: Mapping[str, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    time: np.ndarray | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """Mean BCE of a batch and its gradient with respect to ``weight`` and ``bias``.

    Parameters
    ----------
    params:
        ``{"weight": (d,), "bias": ()}``.
    X, y:
        Batch features ``(n, d)`` and 0/1 labels ``(n,)``.
    time:
        Ignored (the loop passes it to every model).

    Returns
    -------
    tuple
        ``(loss, {"weight": dL/dw, "bias": dL/db})``.
    """
    z = X @ params["weight"] + params["bias"]
    y = np.asarray(y, dtype=np.float64)
    residual = (expit(z) - y) / len(y)
    grads = {"weight": X.T @ residual, "bias": np.asarray(residual.sum())}
    return bce_from_logits(z, y), grads


class LogisticRegression(ModelAdapter):
    """Binary logistic regression trained by the shared local SGD loop.

    Parameters
    ----------
    init_scale:
        Standard deviation of the normal initial weights; ``0`` (default) starts from zeros
        and draws nothing from ``rng``. The bias always starts at 0.

    Notes
    -----
    Params are ``{"weight": (d,), "bias": ()}`` float64, with ``d`` the number of features
    (image inputs are flattened).
    """

    task: ClassVar[TaskType] = "binary"

    def __init__(self, *, init_scale: float = 0.0) -> None:
        if not init_scale >= 0:
            raise ModelError(f"init_scale must be >= 0, got {init_scale}")
        self.init_scale = float(init_scale)

    def __repr__(self) -> str:
        return f"LogisticRegression(init_scale={self.init_scale})"

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        d = int(np.prod(input_shape))
        if d < 1:
            raise ModelError(f"logistic regression needs at least one feature, got {input_shape}")
        weight = rng.normal(0.0, self.init_scale, d) if self.init_scale else np.zeros(d)
        return ArrayRecord({"weight": weight, "bias": np.float64(0.0)}, copy=False)

    def _check(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        Xf = _flat(check_features(X, model="logistic regression"))
        check_params(params, {"weight": (Xf.shape[1],), "bias": ()}, model="logistic regression")
        return Xf

    def fit(
        self,
        params: ArrayRecord,
        data: Dataset,
        spec: LocalTrainSpec,
        rng: np.random.Generator,
    ) -> FitResult:
        X = self._check(params, data.X)
        check_targets(data, "binary", model="logistic regression")
        result = local_sgd(params, logistic_loss_and_grad, data.with_features(X), spec, rng)
        return FitResult(
            params=result.params,
            num_samples=len(data),
            num_steps=result.num_steps,
            metrics={"train_loss": result.loss},
        )

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        Xf = self._check(params, X)
        return np.asarray(expit(Xf @ params["weight"] + params["bias"]), dtype=np.float64)

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        X = self._check(params, data.X)
        check_targets(data, "binary", model="logistic regression")
        return bce_from_logits(X @ params["weight"] + params["bias"], data.y)
