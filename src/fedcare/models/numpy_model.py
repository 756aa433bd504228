"""A model written as three numpy functions: ``init``, ``predict`` and ``gradient``.

A researcher with a model in bare numpy writes::

    def init(input_shape, rng):              # -> {"w": ..., "b": ...}
        return {"w": rng.normal(0, 0.01, size=input_shape[0]), "b": np.zeros(1)}

    def predict(params, X):                  # -> what ModelAdapter.predict returns
        return 1 / (1 + np.exp(-(X @ params["w"] + params["b"][0])))

    def gradient(params, X, y):              # -> gradient of the mean loss, by array name
        err = predict(params, X) - y
        return {"w": X.T @ err / len(X), "b": np.array([err.mean()])}

    model = NumpyModel(init, predict, gradient, task="binary")

and :class:`NumpyModel` does the rest with fedcare's one local loop
(:func:`fedcare.models._local_sgd.local_sgd`): minibatches drawn from ``rng``, ``epochs`` or
``max_steps``, the learning rate, SGD with momentum or Adam, the L2 penalty (on every array
but those named ``bias``, ``*.bias`` or ``*/bias``), the FedProx term and the SCAFFOLD
correction. ``gradient`` returns the gradient of the *data* loss only, without any of those.

``y`` as the functions receive it: ``binary`` and ``regression`` float ``(n,)``;
``multiclass`` int ``(n,)`` class indices; ``multilabel`` float ``(n, L)``; ``survival`` float
``(n, 2)`` with columns ``event`` and ``time``. The loss (``train_loss``, :meth:`loss`) is the
optional ``loss(params, X, y)``, else the task's loss of the predictions
(:func:`fedcare.models._outputs.prediction_loss`). Use module-level functions so the adapter
pickles (simulation runs sites in worker processes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedcare.data.base import Dataset, TaskType
from fedcare.errors import ModelError
from fedcare.models._local_sgd import local_sgd
from fedcare.models._outputs import check_predictions, prediction_loss, target_array
from fedcare.models._validate import check_features, check_params, check_targets
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.records.arrays import ArrayRecord
from fedcare.records.tasks import TASKS

__all__ = ["NumpyModel"]

#: ``init(input_shape, rng) -> {name: array}``.
InitFn = Callable[[tuple[int, ...], np.random.Generator], Mapping[str, Any]]
#: ``predict(params, X) -> predictions`` (see :class:`~fedcare.models.base.ModelAdapter`).
PredictFn = Callable[[Mapping[str, np.ndarray], np.ndarray], Any]
#: ``gradient(params, X, y) -> {name: gradient of the mean data loss}``.
GradientFn = Callable[[Mapping[str, np.ndarray], np.ndarray, np.ndarray], Mapping[str, Any]]
#: ``loss(params, X, y) -> mean data loss``.
LossFn = Callable[[Mapping[str, np.ndarray], np.ndarray, np.ndarray], float]


class NumpyModel(ModelAdapter):
    """A :class:`~fedcare.models.base.ModelAdapter` from numpy functions.

    Parameters
    ----------
    init, predict, gradient:
        See the module docstring.
    task:
        One of :data:`fedcare.records.tasks.TASKS`; fixes what ``predict`` must return
        (checked on every call).
    loss:
        Optional ``loss(params, X, y)``; default: the task's loss of ``predict``'s output.
    name:
        Used in messages.

    Raises
    ------
    ModelError
        For an unknown task or an argument that is not callable.
    """

    def __init__(
        self,
        init: InitFn,
        predict: PredictFn,
        gradient: GradientFn,
        task: TaskType,
        *,
        loss: LossFn | None = None,
        name: str = "numpy model",
    ) -> None:
        if task not in TASKS:
            raise ModelError(f"{name}: unknown task {task!r}; valid: {list(TASKS)}")
        for fn, what in ((init, "init"), (predict, "predict"), (gradient, "gradient")):
            if not callable(fn):
                raise ModelError(f"{name}: {what} must be callable, got {type(fn).__name__}")
        if loss is not None and not callable(loss):
            raise ModelError(f"{name}: loss must be callable or None, got {type(loss).__name__}")
        # The task belongs to the instance here (ModelAdapter declares it per class).
        setattr(self, "task", task)  # noqa: B010
        self.init_fn, self.predict_fn, self.gradient_fn, self.loss_fn = (
            init,
            predict,
            gradient,
            loss,
        )
        self.name = name

    def __repr__(self) -> str:
        return f"NumpyModel(name={self.name!r}, task={self.task!r})"

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        arrays = self.init_fn(tuple(int(v) for v in input_shape), rng)
        if not isinstance(arrays, Mapping) or not arrays:
            raise ModelError(f"{self.name}: init must return a non-empty dict of arrays")
        params = ArrayRecord({k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})
        check_params(params, {k: v.shape for k, v in params.items()}, model=self.name)
        return params

    def _check(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        check_params(params, {k: np.shape(v) for k, v in params.items()}, model=self.name)
        return check_features(X, model=self.name).astype(np.float64, copy=False)

    def _predict(self, params: Mapping[str, np.ndarray], X: np.ndarray) -> np.ndarray:
        return check_predictions(self.task, self.predict_fn(params, X), len(X), model=self.name)

    def _loss(self, params: Mapping[str, np.ndarray], data: Dataset) -> float:
        if self.loss_fn is not None:
            value = float(self.loss_fn(params, data.X, target_array(self.task, data)))
        else:
            value = prediction_loss(self.task, self._predict(params, data.X), data)
        return value

    def fit(
        self,
        params: ArrayRecord,
        data: Dataset,
        spec: LocalTrainSpec,
        rng: np.random.Generator,
    ) -> FitResult:
        X = self._check(params, data.X)
        check_targets(data, self.task, model=self.name)
        if spec.dp is not None:
            raise ModelError(
                f"{self.name}: NumpyModel cannot run DP-SGD (it needs per-example gradients); "
                "write a ModelAdapter or use a torch model for spec.dp"
            )
        data = data.with_features(X)

        def loss_and_grad(
            p: Mapping[str, np.ndarray], Xb: np.ndarray, yb: np.ndarray, tb: Any
        ) -> tuple[float, Mapping[str, np.ndarray]]:
            target = target_array(self.task, Dataset(X=Xb, y=yb, time=tb))
            grads = self.gradient_fn(p, Xb, target)
            if not isinstance(grads, Mapping):
                raise ModelError(f"{self.name}: gradient must return a dict of arrays")
            return float("nan"), grads

        result = local_sgd(params, loss_and_grad, data, spec, rng)
        return FitResult(
            params=result.params,
            num_samples=len(data),
            num_steps=result.num_steps,
            metrics={"train_loss": self._loss(result.params, data)},
        )

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        return self._predict(params, self._check(params, X))

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        X = self._check(params, data.X)
        check_targets(data, self.task, model=self.name)
        return self._loss(params, data.with_features(X))
