"""Softmax (multinomial logistic) regression as three numpy functions.

The entry point of the ``numpy_softmax`` study package (``model:build``): the bare numpy
interface, :class:`fedcare.models.NumpyModel`. The researcher writes only the model:

* :func:`init` -- the named parameter arrays for inputs of a given shape;
* :func:`predict` -- class probabilities ``(n, K)`` (what a ``multiclass`` model returns);
* :func:`gradient` -- the gradient of the mean cross-entropy, by array name;

and fedcare's one local loop does the training as the study says (minibatches, epochs or
steps, learning rate, SGD with momentum or Adam, L2, the FedProx term, SCAFFOLD's correction).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import numpy as np

from fedcare.errors import ModelError
from fedcare.models import NumpyModel


def init(
    input_shape: tuple[int, ...],
    rng: np.random.Generator,
    *,
    num_classes: int,
    init_scale: float,
) -> dict[str, np.ndarray]:
    """Weights ``W`` ``(d, K)`` drawn from N(0, init_scale²) and zero biases ``bias`` ``(K,)``.

    ``bias`` is named so that the study's L2 penalty leaves it alone.
    """
    if len(input_shape) != 1:
        raise ModelError(f"softmax regression needs tabular rows, got input shape {input_shape}")
    W = rng.normal(0.0, init_scale, size=(input_shape[0], num_classes))
    return {"W": W, "bias": np.zeros(num_classes)}


def predict(params: Mapping[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """P(y = k | x) = softmax(x·W + bias)_k, shape ``(n, K)``."""
    z = X @ params["W"] + params["bias"]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def gradient(
    params: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray
) -> dict[str, np.ndarray]:
    """Gradient of the mean cross-entropy; ``y`` holds class indices."""
    K = params["bias"].shape[0]
    labels = np.asarray(y, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= K):
        raise ModelError(
            f"labels must be 0 .. {K - 1}, got {int(labels.min())} .. {int(labels.max())}; "
            "set the option num_classes"
        )
    err = predict(params, X)
    err[np.arange(len(labels)), labels] -= 1.0
    return {"W": X.T @ err / len(X), "bias": err.mean(axis=0)}


def build(num_classes: int = 5, init_scale: float = 0.01) -> NumpyModel:
    """The package's entry point: a ``multiclass`` :class:`~fedcare.models.NumpyModel`.

    Parameters
    ----------
    num_classes:
        K, the number of classes (labels ``0 .. K-1``).
    init_scale:
        Standard deviation of the initial weights (0: start at zero).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not init_scale >= 0:
        raise ModelError(f"init_scale must be >= 0, got {init_scale!r}")
    start = partial(init, num_classes=num_classes, init_scale=float(init_scale))
    return NumpyModel(start, predict, gradient, "multiclass", name="numpy softmax regression")
