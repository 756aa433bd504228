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
from fedcare.models._linear import LinearAdapter
from fedcare.models._validate import check_targets
from fedcare.models.base import FitResult, LocalTrainSpec
from fedcare.records.arrays import ArrayRecord

__all__ = ["LogisticRegression", "bce_from_logits"]


def bce_from_logits(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of labels ``y`` for logits ``z`` (stable for any ``z``)."""
    z = np.asarray(z, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - np.asarray(y, dtype=np.float64) * z))


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


class LogisticRegression(LinearAdapter):
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
    label = "logistic regression"

    def fit(
        self, params: ArrayRecord, data: Dataset, spec: LocalTrainSpec, rng: np.random.Generator
    ) -> FitResult:
        if spec.dp is not None:  # sample-level DP-SGD (fedcare.privacy.dp_sgd)
            return self._fit_dp_sgd(params, data, spec, rng)
        return self._fit_sgd(params, data, spec, rng, logistic_loss_and_grad)

    def _fit_dp_sgd(
        self, params: ArrayRecord, data: Dataset, spec: LocalTrainSpec, rng: np.random.Generator
    ) -> FitResult:
        from fedcare.privacy.dp_sgd import logistic_dp_sgd, round_epsilon

        assert spec.dp is not None
        X = self._check(params, data.X)
        check_targets(data, self.task, model=self.label)
        new, event = logistic_dp_sgd(params, X, np.asarray(data.y), spec, spec.dp, rng)
        return FitResult(
            params=new,
            num_samples=len(data),
            num_steps=event.count,
            metrics={
                "train_loss": bce_from_logits(X @ new["weight"] + new["bias"], data.y),
                "epsilon": round_epsilon(event, spec.dp.delta),
                "dp_noise_multiplier": event.noise_multiplier,
            },
        )

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        Xf = self._check(params, X)
        return np.asarray(expit(Xf @ params["weight"] + params["bias"]), dtype=np.float64)

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        X = self._check(params, data.X)
        check_targets(data, "binary", model=self.label)
        return bce_from_logits(X @ params["weight"] + params["bias"], data.y)
