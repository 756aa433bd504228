"""A model adapter around any PyTorch ``nn.Module``, for every task.

Importing this module does not import torch: building an adapter does, and raises
:class:`~fedcare.errors.ModelError` naming the extra to install when torch is missing.

:func:`make_torch_adapter` is the public entry: a module factory, a task, and optionally a
loss, an optimizer factory and custom train/eval steps. What each task expects of the module's
outputs, which loss it trains by default and what ``predict`` returns is in
:mod:`fedcare.models.torch_tasks`.

Params are the module's ``state_dict`` (parameters and buffers) as float32 numpy arrays in
state-dict order. ``fit`` follows the numpy loop's rules (see
:mod:`fedcare.models._local_sgd`): the same minibatch schedule drawn from ``rng``, L2 on every
array not named ``*.bias``, the FedProx term and the SCAFFOLD correction added to each
gradient after ``backward()``, then the optimizer step: ``torch.optim.SGD`` (momentum, no
dampening) or ``torch.optim.Adam`` (fresh state per call), or what the ``optimizer`` factory
builds. With ``spec.dp`` set, the model trains by sample-level DP-SGD through Opacus
(:mod:`fedcare.models.torch_dp`); else it resumes ``spec.checkpoint`` (:mod:`.torch_checkpoint`).

Randomness: one seed drawn from ``rng`` seeds torch's CPU generator inside ``fork_rng`` (under
a process-wide lock) for construction, initialization and dropout: reproducible on CPU, and
torch's global generator is left as it was. A site's policy may allow CUDA (``device``).
Loading params skips the random init where no later draw can tell (:mod:`.torch_params`).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fedcare.data.base import Dataset, TaskType
from fedcare.errors import ModelError
from fedcare.models._local_sgd import minibatch_schedule
from fedcare.models._validate import check_correction, check_features, check_params, check_targets
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.models.torch_checkpoint import resumable
from fedcare.models.torch_dp import fit_dp_sgd
from fedcare.models.torch_offload import ParamOffload
from fedcare.models.torch_params import build_module, load_params, meta_shapes
from fedcare.models.torch_params import export as export_params
from fedcare.models.torch_runtime import (
    EvalStep,
    LossFn,
    ModuleFactory,
    OptimizerFactory,
    Placement,
    TrainStep,
    check_callable,
    draw_seed,
    gradient_terms,
    import_torch,
    seeded,
)
from fedcare.models.torch_tasks import TASK_HEADS, TorchTask, numpy_data_loss, target_tensor
from fedcare.records.arrays import ArrayRecord
from fedcare.records.tasks import TASKS

if TYPE_CHECKING:
    import torch as torch_types

__all__ = [
    "TorchAdapter",
    "TorchMulticlassAdapter",
    "TorchMultilabelAdapter",
    "TorchRegressionAdapter",
    "TorchSurvivalAdapter",
    "import_torch",
    "make_torch_adapter",
]


class TorchAdapter(ModelAdapter):
    """A binary classifier around an ``nn.Module`` returning one logit per example.

    The subclasses below change only :attr:`task`; build any of them with
    :func:`make_torch_adapter`.

    Parameters
    ----------
    factory:
        ``input_shape -> nn.Module``; called for every ``init_params``, ``fit`` and
        ``predict`` (the adapter keeps no module, so it is safe to share between threads).
        Use a module-level function or ``functools.partial`` so the adapter pickles.
    name:
        Used in messages (e.g. the architecture name).
    predict_batch_size:
        Rows per forward pass in ``predict`` and ``loss``.
    loss:
        ``loss(outputs, target) -> scalar tensor`` replacing the task's default loss, in
        training and in :meth:`loss`; it must be the mean over the batch's examples (DP-SGD
        relies on it). ``outputs`` and ``target`` are as :mod:`fedcare.models.torch_tasks`
        describes.
    optimizer:
        ``optimizer(parameters, spec) -> torch.optim.Optimizer`` replacing the one
        ``spec.optimizer`` names (``spec.lr`` and ``spec.momentum`` are then up to it).
    train_step:
        ``train_step(module, (inputs, target), spec) -> scalar loss tensor`` replacing
        ``loss(module(inputs), target)``; the adapter still zeroes gradients, calls
        ``backward()``, adds the L2/FedProx/SCAFFOLD terms and steps the optimizer.
    eval_step:
        ``eval_step(module, inputs) -> raw outputs`` replacing ``module(inputs)`` in
        ``predict`` and ``loss`` (run in eval mode without gradients).
    device, amp:
        Where to compute (``None``: the device the site's policy allows, else CPU) and
        bfloat16 autocast on CUDA (:class:`~fedcare.models.torch_runtime.Placement`).
    """

    task: ClassVar[TaskType] = "binary"

    def __init__(
        self,
        factory: ModuleFactory,
        *,
        name: str = "torch model",
        predict_batch_size: int = 1024,
        loss: LossFn | None = None,
        optimizer: OptimizerFactory | None = None,
        train_step: TrainStep | None = None,
        eval_step: EvalStep | None = None,
        device: str | None = None,
        amp: bool = False,
    ) -> None:
        import_torch()
        if not callable(factory):
            raise ModelError(f"factory must be callable, got {type(factory).__name__}")
        if isinstance(predict_batch_size, bool) or predict_batch_size < 1:
            raise ModelError(f"predict_batch_size must be >= 1, got {predict_batch_size}")
        hooks = {"loss": loss, "optimizer": optimizer, "train_step": train_step}
        for what, value in {**hooks, "eval_step": eval_step}.items():
            check_callable(value, what)
        self.factory = factory
        self.name = name
        self.predict_batch_size = int(predict_batch_size)
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.train_step = train_step
        self.eval_step = eval_step
        self.placement = Placement(device, bool(amp))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, task={self.task!r})"

    @property
    def head(self) -> TorchTask:
        """The per-task pieces (:mod:`fedcare.models.torch_tasks`)."""
        return TASK_HEADS[self.task]

    # Module <-> params (fedcare.models.torch_params) -----------------------------------------
    def load(
        self,
        params: ArrayRecord,
        input_shape: tuple[int, ...],
        *,
        skip_init: bool = True,
        offload: ParamOffload | None = None,
    ) -> torch_types.nn.Module:
        """A module for ``input_shape`` holding ``params`` (checked, each array copied once),
        built without its random init where that changes nothing (:mod:`.torch_params`), its
        params in a scratch file when ``offload`` says so (:mod:`.torch_offload`)."""
        torch = import_torch()
        hooks = (self.loss_fn, self.optimizer_factory, self.train_step, self.eval_step)
        skip_init = skip_init and all(h is None for h in hooks)
        module = build_module(torch, self.factory, input_shape, name=self.name, skip_init=skip_init)
        state = module.state_dict()
        check_params(params, {k: tuple(v.shape) for k, v in state.items()}, model=self.name)
        load_params(torch, module, params, offload)
        return module

    #: ``export(module, order)``: the state dict's float32 arrays (:func:`.torch_params.export`)
    export = staticmethod(export_params)

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        with seeded(draw_seed(rng)) as torch:  # the random initialisation, drawn
            module = build_module(torch, self.factory, input_shape, name=self.name, skip_init=False)
        return self.export(module, list(module.state_dict()))

    def param_shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """The params' shapes from the module built on the meta device (no storage, no init)."""
        with seeded(None) as torch:
            shapes = meta_shapes(torch, self.factory, input_shape)
        return super().param_shapes(input_shape) if shapes is None else shapes

    # Training ----------------------------------------------------------------------------------
    def criterion(self, torch: ModuleType, outputs: Any, target: Any) -> Any:
        """The batch loss of shaped ``outputs``: the custom loss, else the task's default."""
        if self.loss_fn is not None:
            return self.loss_fn(outputs, target)
        return self.head.default_loss(torch, outputs, target)

    def _batch_loss(self, torch: ModuleType, module: Any, batch: tuple[Any, Any], spec: Any) -> Any:
        inputs, target = batch
        if self.train_step is not None:
            loss = self.train_step(module, batch, spec)
        else:
            outputs = self.head.shape_outputs(module(inputs), len(inputs), model=self.name)
            loss = self.criterion(torch, outputs, target)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ModelError(
                f"{self.name}: the training loss must be a scalar tensor, got "
                f"{type(loss).__name__} {tuple(getattr(loss, 'shape', ()))}"
            )
        return loss.reshape(())

    def fit(
        self,
        params: ArrayRecord,
        data: Dataset,
        spec: LocalTrainSpec,
        rng: np.random.Generator,
    ) -> FitResult:
        X = check_features(data.X, model=self.name)
        check_targets(data, self.task, model=self.name)
        if spec.dp is not None:  # sample-level DP-SGD through Opacus (fedcare.privacy.dp_sgd)
            return fit_dp_sgd(self, params, data, spec, rng)
        if spec.correction is not None:
            check_correction(params, spec.correction)
        # Permutations first, then the torch seed: the numpy loop draws the same batches.
        rng0, batches = rng.bit_generator.state, list(minibatch_schedule(len(data), spec, rng))
        with seeded(draw_seed(rng)) as torch:
            device = self.placement.resolve(torch)
            offload = spec.offload if device.type == "cpu" else None  # a site's memory budget
            module = self.load(params, X.shape[1:], offload=offload).to(device).train()
            named = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
            optimizer = self.make_optimizer(torch, [p for _, p in named], spec, 0.0)
            extra_grad = gradient_terms(torch, named, spec)
            inputs = torch.from_numpy(np.array(X, dtype=np.float32)).to(device)
            target = target_tensor(torch, self.task, np.asarray(data.y), data.time).to(device)
            for idx in resumable(spec.checkpoint, batches, torch, module, optimizer, rng, rng0):
                batch = (inputs, target)
                if idx is not None:
                    rows = torch.from_numpy(idx).to(device)
                    batch = (inputs[rows], target[rows])
                optimizer.zero_grad(set_to_none=False)
                with self.placement.autocast(torch, device):
                    loss = self._batch_loss(torch, module, batch, spec)
                loss.float().backward()
                extra_grad()
                optimizer.step()
            del optimizer, extra_grad  # and the grads: model copies the rest does not need
            module.zero_grad(set_to_none=True)
            new = self.export(module, list(params))
            raw = self.forward(module, X)
        if not new.all_finite():
            raise ModelError(
                f"{self.name}: local training diverged (non-finite parameters); lower the "
                f"learning rate (lr={spec.lr})"
            )
        return FitResult(
            params=new,
            num_samples=len(data),
            num_steps=len(batches),
            metrics={"train_loss": self.data_loss(raw, data)},
            owned=True,  # the trained module's memory, which nothing else holds
        )

    def make_optimizer(
        self,
        torch: ModuleType,
        parameters: list[Any],
        spec: LocalTrainSpec,
        weight_decay: float = 0,
    ) -> Any:
        """The optimizer factory's optimizer, else SGD or Adam as ``spec`` says."""
        if self.optimizer_factory is not None:
            optimizer = self.optimizer_factory(parameters, spec)
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise ModelError(
                    f"{self.name}: the optimizer factory returned {type(optimizer).__name__}, "
                    "not a torch.optim.Optimizer"
                )
            return optimizer
        if spec.optimizer == "adam":
            return torch.optim.Adam(parameters, lr=spec.lr, weight_decay=weight_decay)
        return torch.optim.SGD(
            parameters, lr=spec.lr, momentum=spec.momentum, weight_decay=weight_decay
        )

    # Evaluation --------------------------------------------------------------------------------
    def forward(self, module: torch_types.nn.Module, X: np.ndarray) -> np.ndarray:
        """Raw outputs (logits, values or risks) as float64, in batches, without gradients."""
        torch = import_torch()
        device = next(module.parameters(), torch.empty(0)).device
        module.eval()
        outs = []
        with torch.no_grad(), self.placement.autocast(torch, device):
            for start in range(0, len(X), self.predict_batch_size):
                chunk = torch.from_numpy(
                    np.array(X[start : start + self.predict_batch_size], dtype=np.float32)
                ).to(device)
                out = module(chunk) if self.eval_step is None else self.eval_step(module, chunk)
                out = self.head.shape_outputs(out, len(chunk), model=self.name)
                outs.append(out.double().cpu().numpy())
        return np.concatenate(outs)

    def data_loss(self, raw: np.ndarray, data: Dataset) -> float:
        """The loss of raw outputs on all of ``data``: numpy float64 for the default loss."""
        if self.loss_fn is None:
            try:
                return numpy_data_loss(self.task, raw, data.y, data.time)
            except ModelError as exc:
                raise ModelError(f"{self.name}: {exc}") from None
        torch = import_torch()
        with torch.no_grad():
            outputs = torch.from_numpy(raw.astype(np.float32))
            target = target_tensor(torch, self.task, np.asarray(data.y), data.time)
            return float(self.loss_fn(outputs, target))

    def _raw(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        X = check_features(X, model=self.name)
        with seeded(None) as torch:  # a construction that draws leaves no trace
            module = self.load(params, X.shape[1:]).to(self.placement.resolve(torch))
        return self.forward(module, X)

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        return self.head.activate(self._raw(params, X))

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        check_targets(data, self.task, model=self.name)
        return self.data_loss(self._raw(params, data.X), data)


class TorchMulticlassAdapter(TorchAdapter):
    """``K`` classes: ``(n, K)`` logits, cross-entropy; ``predict`` gives softmax rows."""

    task: ClassVar[TaskType] = "multiclass"


class TorchMultilabelAdapter(TorchAdapter):
    """``L`` 0/1 labels: ``(n, L)`` logits, mean BCE; ``predict`` gives each sigmoid."""

    task: ClassVar[TaskType] = "multilabel"


class TorchRegressionAdapter(TorchAdapter):
    """A regression: the module returns one value per example (MSE by default)."""

    task: ClassVar[TaskType] = "regression"


class TorchSurvivalAdapter(TorchAdapter):
    """A survival model around an ``nn.Module`` returning one risk score per example.

    Trained on the Breslow negative partial log-likelihood per event of each minibatch (0 for
    a batch without events); :meth:`predict` returns the risk score (higher: earlier event).
    """

    task: ClassVar[TaskType] = "survival"


_BY_TASK: dict[str, type[TorchAdapter]] = {
    "binary": TorchAdapter,
    "multiclass": TorchMulticlassAdapter,
    "multilabel": TorchMultilabelAdapter,
    "regression": TorchRegressionAdapter,
    "survival": TorchSurvivalAdapter,
}


def make_torch_adapter(
    factory: ModuleFactory,
    task: TaskType = "binary",
    *,
    loss: LossFn | None = None,
    optimizer: OptimizerFactory | None = None,
    train_step: TrainStep | None = None,
    eval_step: EvalStep | None = None,
    name: str = "torch model",
    predict_batch_size: int = 1024,
    device: str | None = None,
    amp: bool = False,
) -> TorchAdapter:
    """The torch adapter for ``task`` around ``factory``.

    Parameters
    ----------
    factory:
        ``input_shape -> nn.Module`` (see :class:`TorchAdapter`).
    task:
        One of :data:`fedcare.records.tasks.TASKS`.
    loss, optimizer, train_step, eval_step, name, predict_batch_size, device, amp:
        See :class:`TorchAdapter`.

    Returns
    -------
    TorchAdapter
        The adapter class of ``task``.

    Raises
    ------
    ModelError
        For an unknown task, a non-callable argument, or torch missing.
    """
    if task not in _BY_TASK:
        raise ModelError(f"unknown task {task!r} for a torch model; valid: {list(TASKS)}")
    return _BY_TASK[task](
        factory,
        name=name,
        predict_batch_size=predict_batch_size,
        loss=loss,
        optimizer=optimizer,
        train_step=train_step,
        eval_step=eval_step,
        device=device,
        amp=amp,
    )
