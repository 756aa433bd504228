"""A numpy logistic regression written against fedcare's ``ModelAdapter`` interface.

The entry point of the ``numpy_logistic`` study package (``model:NumpyLogistic``). It uses
only numpy and the public interface (``fedcare.models.base``, ``fedcare.records``).
"""

from __future__ import annotations

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.records.arrays import ArrayRecord


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))


class NumpyLogistic(ModelAdapter):
    """P(y=1 | x) = sigmoid(x·w + b), trained by SGD on the mean cross-entropy."""

    task = "binary"

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        if len(input_shape) != 1:
            raise ModelError(f"NumpyLogistic needs tabular rows, got input shape {input_shape}")
        weights = rng.normal(0.0, 0.01, size=input_shape[0])
        return ArrayRecord({"w": weights, "b": np.zeros(1)})

    def fit(
        self,
        params: ArrayRecord,
        data: Dataset,
        spec: LocalTrainSpec,
        rng: np.random.Generator,
    ) -> FitResult:
        w, b = params["w"].astype(np.float64), params["b"].astype(np.float64)
        if w.shape != (data.X.shape[1],):
            raise ModelError(f"params w has shape {w.shape}, data has {data.X.shape[1]} features")
        center_w, center_b = w.copy(), b.copy()
        n = len(data)
        batch = spec.batch_size or n
        steps = 0
        total = spec.max_steps if spec.max_steps is not None else spec.epochs * -(-n // batch)
        order = rng.permutation(n)
        cursor = 0
        while steps < total:
            if cursor >= n:
                order, cursor = rng.permutation(n), 0
            idx = order[cursor : cursor + batch]
            cursor += batch
            X, y = data.X[idx], data.y[idx].astype(np.float64)
            err = _sigmoid(X @ w + b[0]) - y
            grad_w = X.T @ err / len(idx) + spec.l2 * w + spec.prox_mu * (w - center_w)
            grad_b = np.array([err.mean()]) + spec.prox_mu * (b - center_b)
            if spec.correction is not None:
                grad_w = grad_w + spec.correction["w"]
                grad_b = grad_b + spec.correction["b"]
            w, b = w - spec.lr * grad_w, b - spec.lr * grad_b
            steps += 1
        new = ArrayRecord({"w": w, "b": b})
        return FitResult(new, n, steps, {"loss": self.loss(new, data)})

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        return _sigmoid(np.asarray(X, dtype=np.float64) @ params["w"] + params["b"][0])

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        p = np.clip(self.predict(params, data.X), 1e-12, 1 - 1e-12)
        y = data.y.astype(np.float64)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
