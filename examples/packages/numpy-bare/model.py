"""Softmax (multinomial logistic) regression in plain numpy, on fedcare's bare interface.

The entry point of the ``numpy_softmax`` study package (``model:SoftmaxRegression``): a
:class:`fedcare.models.ModelAdapter` subclass written from scratch, with no helper adapter. It
shows the whole contract a researcher implements: ``init_params`` (named arrays),
``fit`` (honouring :class:`fedcare.models.LocalTrainSpec`: steps, batches, learning rate,
momentum, L2, the FedProx term and SCAFFOLD's correction), ``predict`` (class probabilities,
``(n, K)``) and ``loss``.
"""

from __future__ import annotations

import numpy as np

from fedcare.data import Dataset
from fedcare.errors import ModelError
from fedcare.models import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.records import ArrayRecord


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


class SoftmaxRegression(ModelAdapter):
    """P(y = k | x) = softmax(x·W + b)_k, trained by minibatch SGD on the mean cross-entropy.

    Parameters
    ----------
    num_classes:
        K, the number of classes (labels are ``0 .. K-1``).
    init_scale:
        Standard deviation of the initial weights (0: start at zero).
    """

    task = "multiclass"

    def __init__(self, num_classes: int = 5, init_scale: float = 0.01) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ModelError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if not init_scale >= 0:
            raise ModelError(f"init_scale must be >= 0, got {init_scale!r}")
        self.num_classes = num_classes
        self.init_scale = float(init_scale)

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        if len(input_shape) != 1:
            raise ModelError(f"SoftmaxRegression needs tabular rows, got shape {input_shape}")
        W = rng.normal(0.0, self.init_scale, size=(input_shape[0], self.num_classes))
        return ArrayRecord({"W": W, "b": np.zeros(self.num_classes)})

    def _check(self, params: ArrayRecord, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
        W, b = np.asarray(params["W"], np.float64), np.asarray(params["b"], np.float64)
        if W.shape != (data.X.shape[1], self.num_classes):
            raise ModelError(
                f"params W has shape {W.shape}; data has {data.X.shape[1]} features and the "
                f"model {self.num_classes} classes"
            )
        y = np.asarray(data.y)
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            raise ModelError(
                f"labels must be 0 .. {self.num_classes - 1}, got {int(y.min())} .. "
                f"{int(y.max())}; set num_classes"
            )
        return W, b

    def fit(
        self,
        params: ArrayRecord,
        data: Dataset,
        spec: LocalTrainSpec,
        rng: np.random.Generator,
    ) -> FitResult:
        if spec.optimizer != "sgd":
            raise ModelError(f"SoftmaxRegression trains with sgd, not {spec.optimizer!r}")
        if spec.dp is not None:
            raise ModelError("SoftmaxRegression does not implement DP-SGD")
        W, b = self._check(params, data)
        centre_W, centre_b = W.copy(), b.copy()
        vel_W, vel_b = np.zeros_like(W), np.zeros_like(b)
        X = np.asarray(data.X, dtype=np.float64)
        onehot = np.eye(self.num_classes)[np.asarray(data.y, dtype=np.int64)]
        n = len(data)
        batch = spec.batch_size or n
        total = spec.max_steps if spec.max_steps is not None else spec.epochs * -(-n // batch)
        order, cursor = rng.permutation(n), 0
        for _ in range(total):
            if cursor >= n:
                order, cursor = rng.permutation(n), 0
            idx = order[cursor : cursor + batch]
            cursor += batch
            err = _softmax(X[idx] @ W + b) - onehot[idx]
            grad_W = X[idx].T @ err / len(idx) + spec.l2 * W + spec.prox_mu * (W - centre_W)
            grad_b = err.mean(axis=0) + spec.prox_mu * (b - centre_b)
            if spec.correction is not None:
                grad_W = grad_W + spec.correction["W"]
                grad_b = grad_b + spec.correction["b"]
            vel_W = spec.momentum * vel_W + grad_W
            vel_b = spec.momentum * vel_b + grad_b
            W, b = W - spec.lr * vel_W, b - spec.lr * vel_b
        new = ArrayRecord({"W": W, "b": b})
        if not new.all_finite():
            raise ModelError(f"training diverged (non-finite weights); lower lr={spec.lr}")
        return FitResult(new, n, total, {"train_loss": self.loss(new, data)})

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return _softmax(X @ np.asarray(params["W"], np.float64) + params["b"])

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        self._check(params, data)
        prob = self.predict(params, data.X)
        picked = prob[np.arange(len(data)), np.asarray(data.y, dtype=np.int64)]
        return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))
