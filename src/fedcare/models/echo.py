"""A model that does not learn: for benchmarks of the grid, the site and the aggregation.

``kind: echo`` has ``parameters`` float32 weights (one array ``weight``) whatever its inputs,
and its ``fit`` returns the parameters it was given, unchanged (the same arrays: nothing is
copied), with the site's row count as weight. Everything around it is real: the task crosses
the grid, the site checks it against its policy and the parameter template, builds its reply
through the study's privacy pipeline, and the coordinator validates and aggregates every update.
A round over ``N`` echo sites therefore measures what fedcare itself costs per round for a
model of that size (the workload of Flower's "no training" simulation benchmark), not
training. It predicts 0.5 for every row.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from fedcare.data.base import Dataset, TaskType
from fedcare.errors import ModelError
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.records.arrays import ArrayRecord

__all__ = ["EchoModel"]


class EchoModel(ModelAdapter):
    """A binary model of ``parameters`` float32 zeros whose training changes nothing.

    Parameters
    ----------
    parameters:
        Number of parameters (at least 1).
    """

    task: ClassVar[TaskType] = "binary"

    def __init__(self, parameters: int = 1_000_000) -> None:
        if isinstance(parameters, bool) or not isinstance(parameters, int) or parameters < 1:
            raise ModelError(f"echo model: parameters must be an integer >= 1, got {parameters!r}")
        self.parameters = parameters

    def __repr__(self) -> str:
        return f"EchoModel(parameters={self.parameters})"

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        return ArrayRecord({"weight": np.zeros(self.parameters, dtype=np.float32)}, copy=False)

    def param_shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.parameters,)}

    def _check(self, params: ArrayRecord) -> None:
        shape = params["weight"].shape if "weight" in params else None
        if list(params) != ["weight"] or shape != (self.parameters,):
            raise ModelError(
                f"echo model: params must be one array 'weight' of shape ({self.parameters},), "
                f"got {dict(params.shapes)}"
            )

    def fit(
        self, params: ArrayRecord, data: Dataset, spec: LocalTrainSpec, rng: np.random.Generator
    ) -> FitResult:
        self._check(params)
        return FitResult(params=params, num_samples=len(data), num_steps=0)

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        self._check(params)
        return np.full(len(X), 0.5, dtype=np.float64)

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        self._check(params)
        return math.log(2.0)  # the cross-entropy of predicting 0.5
