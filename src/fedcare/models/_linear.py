"""What the linear adapters share: init-scale option, flat float64 features, param checks."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.models._local_sgd import LossAndGrad, local_sgd
from fedcare.models._validate import check_features, check_params, check_targets
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.records.arrays import ArrayRecord

__all__ = ["LinearAdapter"]


class LinearAdapter(ModelAdapter):
    """A model with ``weight`` of shape ``(d,)`` (and ``bias`` when :attr:`has_bias`)."""

    #: Name used in error messages.
    label: ClassVar[str]
    has_bias: ClassVar[bool] = True

    def __init__(self, *, init_scale: float = 0.0) -> None:
        if not init_scale >= 0:
            raise ModelError(f"init_scale must be >= 0, got {init_scale}")
        self.init_scale = float(init_scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(init_scale={self.init_scale})"

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        d = int(np.prod(input_shape))
        if d < 1:
            raise ModelError(f"{self.label} needs at least one feature, got {input_shape}")
        weight = rng.normal(0.0, self.init_scale, d) if self.init_scale else np.zeros(d)
        arrays = (
            {"weight": weight, "bias": np.float64(0.0)} if self.has_bias else {"weight": weight}
        )
        return ArrayRecord(arrays, copy=False)

    def _check(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        """``X`` as flat float64 rows, after checking it and ``params`` fit together."""
        arr = check_features(X, model=self.label)
        Xf = np.asarray(arr, dtype=np.float64).reshape(len(arr), -1)
        shapes: dict[str, tuple[int, ...]] = {"weight": (Xf.shape[1],)}
        if self.has_bias:
            shapes["bias"] = ()
        check_params(params, shapes, model=self.label)
        return Xf

    def _fit_sgd(
        self,
        params: ArrayRecord,
        data: Dataset,
        spec: LocalTrainSpec,
        rng: np.random.Generator,
        loss_and_grad: LossAndGrad,
    ) -> FitResult:
        X = self._check(params, data.X)
        check_targets(data, self.task, model=self.label)
        result = local_sgd(params, loss_and_grad, data.with_features(X), spec, rng)
        return FitResult(
            params=result.params,
            num_samples=len(data),
            num_steps=result.num_steps,
            metrics={"train_loss": result.loss},
        )
