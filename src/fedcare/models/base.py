"""The one interface every model adapter implements.

An adapter is stateless: parameters travel as :class:`~fedcare.records.ArrayRecord` and every
method takes them explicitly, so the same adapter serves the coordinator, any number of sites
and the baselines. Randomness comes in as a ``numpy.random.Generator``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from fedcare.data.base import Dataset, TaskType
from fedcare.errors import ModelError
from fedcare.records.arrays import ArrayRecord

if TYPE_CHECKING:
    from fedcare.models.checkpoint import TrainingCheckpoint
    from fedcare.models.torch_offload import ParamOffload
    from fedcare.privacy.dp_sgd import DpSgdSpec

__all__ = ["FitResult", "LocalTrainSpec", "ModelAdapter"]


@dataclass(frozen=True)
class LocalTrainSpec:
    """How a site trains locally in one round.

    Attributes
    ----------
    epochs:
        Passes over the local training rows (ignored when ``max_steps`` is set).
    max_steps:
        If set, exactly this many minibatch steps (FLamby's ``num_updates``), cycling epochs.
    lr, optimizer, momentum:
        Local optimizer: plain/momentum SGD or Adam (Adam state restarts every round).
    batch_size:
        Minibatch size; ``None`` means full batch.
    l2:
        L2 penalty ``l2/2 * ||w||^2`` on weights (not biases).
    prox_mu:
        FedProx proximal term ``mu/2 * ||w - w_global||^2``; the centre is the params passed
        to :meth:`ModelAdapter.fit`.
    correction:
        SCAFFOLD's ``c - c_i``, added to every local gradient; ``None`` for other strategies.
    dp:
        Sample-level DP-SGD settings (:mod:`fedcare.privacy.dp_sgd`); ``None``: no DP-SGD.
    checkpoint:
        Where the training loop saves its progress and resumes from
        (:mod:`fedcare.models.checkpoint`); set by a site for one task, never compared.
    offload:
        The site's memory budget: a torch model too large for it keeps its parameters in a
        memory-mapped scratch file (:mod:`fedcare.models.torch_offload`); set by a site,
        never compared, ignored by other adapters.
    """

    epochs: int = 1
    max_steps: int | None = None
    lr: float = 0.1
    batch_size: int | None = None
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.0
    l2: float = 0.0
    prox_mu: float = 0.0
    correction: ArrayRecord | None = None
    dp: DpSgdSpec | None = None
    checkpoint: TrainingCheckpoint | None = field(default=None, compare=False, repr=False)
    offload: ParamOffload | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ModelError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ModelError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if not self.lr > 0:
            raise ModelError(f"lr must be > 0, got {self.lr}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ModelError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        if self.optimizer not in ("sgd", "adam"):
            raise ModelError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.l2 < 0 or self.prox_mu < 0:
            raise ModelError(f"l2 and prox_mu must be >= 0, got {self.l2} and {self.prox_mu}")


@dataclass(frozen=True)
class FitResult:
    """What local training produced: new params, how many rows and steps, train metrics."""

    params: ArrayRecord
    num_samples: int
    num_steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    #: True when ``params`` are new arrays nothing else holds (views of writeable arrays): the
    #: caller may compute into them, as a site computes its update ``new - old`` in place.
    owned: bool = False


class ModelAdapter(ABC):
    """A model fedcare can train and evaluate on a site's local data.

    The contract a researcher implements (``docs/model-interface.md``): stateless (parameters
    travel in every call), deterministic given ``rng``, never mutating its inputs, and with a
    parameter template (names, shapes, dtypes from :meth:`init_params`) that does not depend
    on a site's data.
    """

    #: The task kind the model solves (:data:`fedcare.records.tasks.TASKS`), which fixes what
    #: ``predict`` returns: ``"binary"`` P(y=1) ``(n,)``; ``"multiclass"`` class probabilities
    #: ``(n, K)`` summing to 1 per row; ``"multilabel"`` P(label=1) ``(n, L)``;
    #: ``"regression"`` the predicted value ``(n,)``; ``"survival"`` a risk score ``(n,)``
    #: (higher means earlier events). :func:`fedcare.evaluation.metrics.compute_metrics` turns
    #: that into the task's metrics.
    task: ClassVar[TaskType]

    @abstractmethod
    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        """Initial parameters for inputs of ``input_shape`` (without the batch axis).

        Parameters
        ----------
        input_shape:
            Shape of one example, e.g. ``(13,)`` or ``(1, 28, 28)``.
        rng:
            Source of randomness; the same generator state gives the same parameters.

        Returns
        -------
        ArrayRecord
            The parameters, in a fixed order.
        """

    def param_shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """The shapes of :meth:`init_params`'s arrays, in order, for inputs of ``input_shape``.

        A site checks a task's params against them. This default builds the initial params;
        an adapter whose initialisation is costly (a large model) overrides it.
        """
        return self.init_params(input_shape, np.random.default_rng(0)).shapes

    @abstractmethod
    def fit(
        self,
        params: ArrayRecord,
        data: Dataset,
        spec: LocalTrainSpec,
        rng: np.random.Generator,
    ) -> FitResult:
        """Train from ``params`` on ``data`` as ``spec`` says; never mutates ``params``.

        Parameters
        ----------
        params:
            Starting (global) parameters; also the FedProx centre.
        data:
            The site's training rows, already preprocessed.
        spec:
            Local training hyper-parameters.
        rng:
            Source of randomness for shuffling (and dropout etc.).

        Returns
        -------
        FitResult
            New parameters with the same structure as ``params``.

        Raises
        ------
        ModelError
            If ``params`` do not fit the model, or ``spec`` asks for something this adapter
            cannot do (e.g. a proximal term for a closed-form estimator).
        """

    @abstractmethod
    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        """Predictions for rows ``X``, as :attr:`task` fixes them.

        Parameters
        ----------
        params:
            Model parameters.
        X:
            Features, shape ``(n, ...)``.

        Returns
        -------
        numpy.ndarray
            float64: ``(n,)`` P(y=1) (binary), the value (regression) or a risk score
            (survival); ``(n, K)`` class probabilities summing to 1 per row (multiclass);
            ``(n, L)`` P(label=1) (multilabel).
        """

    @abstractmethod
    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        """Mean training loss of ``params`` on ``data`` (without penalty terms).

        Parameters
        ----------
        params:
            Model parameters.
        data:
            Rows to evaluate on.

        Returns
        -------
        float
            The loss the model trains on, e.g. binary or multiclass cross-entropy, mean squared
            error, or the Cox negative partial log-likelihood per event.
        """
