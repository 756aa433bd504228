"""A model adapter around any PyTorch ``nn.Module`` with one output per example.

Importing this module does not import torch: building an adapter does, and raises
:class:`~fedcare.errors.ModelError` naming the extra to install when torch is missing.

Params are the module's ``state_dict`` (parameters and buffers) as float32 numpy arrays in
state-dict order. ``fit`` follows the numpy loop's rules (see
:mod:`fedcare.models._local_sgd`): the same minibatch schedule drawn from ``rng``, L2 on every
array not named ``*.bias``, the FedProx term and the SCAFFOLD correction added to each
gradient, then ``torch.optim.SGD`` (momentum, no dampening) or ``torch.optim.Adam`` (fresh
state per call). Binary tasks train on BCE-with-logits, survival tasks on the Breslow negative
partial log-likelihood per event of each batch. With ``spec.dp`` set, binary models train by
sample-level DP-SGD through Opacus's ``PrivacyEngine`` (extra ``dp``): the spec, its schedule
and its accounting event are :mod:`fedcare.privacy.dp_sgd`'s; this module runs the steps.

Randomness: one seed drawn from ``rng`` seeds torch's generator inside
``torch.random.fork_rng`` for module construction, initialization and dropout, so results
are reproducible and torch's global generator is left as it was. Layers draw from that global
generator, so a process-wide lock serializes these sections: sites trained on threads of one
process stay reproducible (separate processes, e.g. Ray workers, do not contend).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from scipy.special import expit

from fedcare.data.base import Dataset, TaskType
from fedcare.errors import ModelError
from fedcare.models._local_sgd import minibatch_schedule
from fedcare.models._validate import (
    check_correction,
    check_features,
    check_params,
    check_targets,
    is_bias,
)
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.models.cox import cox_loss_and_eta_grad, risk_set_bounds
from fedcare.models.logistic import bce_from_logits
from fedcare.records.arrays import ArrayRecord

if TYPE_CHECKING:
    import torch as torch_types

__all__ = ["TorchAdapter", "TorchSurvivalAdapter", "import_torch", "make_torch_adapter"]

#: Builds a fresh module for inputs of a given shape (without the batch axis).
ModuleFactory = Callable[[tuple[int, ...]], "torch_types.nn.Module"]


def import_torch() -> ModuleType:
    """Import and return ``torch``, or raise :class:`ModelError` saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            "PyTorch models need the torch extra: pip install 'fedcare[torch]'"
        ) from exc
    return torch


#: Guards torch's global generator while a section forks, seeds and uses it.
_GLOBAL_RNG_LOCK = threading.Lock()


@contextmanager
def _seeded(seed: int | None) -> Iterator[ModuleType]:
    """Torch with its CPU generator seeded to ``seed`` (if given), restored afterwards."""
    torch = import_torch()
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield torch


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**63 - 1))


class TorchAdapter(ModelAdapter):
    """A binary classifier around an ``nn.Module`` returning one logit per example.

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
    """

    task: ClassVar[TaskType] = "binary"

    def __init__(
        self, factory: ModuleFactory, *, name: str = "torch model", predict_batch_size: int = 1024
    ) -> None:
        import_torch()
        if not callable(factory):
            raise ModelError(f"factory must be callable, got {type(factory).__name__}")
        if predict_batch_size < 1:
            raise ModelError(f"predict_batch_size must be >= 1, got {predict_batch_size}")
        self.factory = factory
        self.name = name
        self.predict_batch_size = int(predict_batch_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, task={self.task!r})"

    # Module <-> params -------------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, ...]) -> torch_types.nn.Module:
        module = self.factory(tuple(int(v) for v in input_shape))
        if not isinstance(module, import_torch().nn.Module):
            raise ModelError(
                f"{self.name}: factory returned {type(module).__name__}, not nn.Module"
            )
        return module

    def _load(self, params: ArrayRecord, input_shape: tuple[int, ...]) -> torch_types.nn.Module:
        """A module for ``input_shape`` holding ``params`` (checked against its state dict)."""
        torch = import_torch()
        module = self._build(input_shape)
        state = module.state_dict()
        check_params(params, {k: tuple(v.shape) for k, v in state.items()}, model=self.name)
        module.load_state_dict(
            {k: torch.tensor(np.asarray(params[k]), dtype=v.dtype) for k, v in state.items()}
        )
        return module

    @staticmethod
    def _export(module: torch_types.nn.Module, order: list[str]) -> ArrayRecord:
        state = module.state_dict()
        return ArrayRecord(
            {k: state[k].detach().cpu().numpy().astype(np.float32) for k in order}, copy=False
        )

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        with _seeded(_seed(rng)):
            module = self._build(input_shape)
        return self._export(module, list(module.state_dict()))

    # Training ----------------------------------------------------------------------------------
    def _batch_loss(self, out: Any, y: np.ndarray, time: np.ndarray | None) -> Any:
        """Mean BCE-with-logits of one batch's outputs ``out`` for labels ``y``."""
        torch = import_torch()
        target = torch.from_numpy(np.asarray(y, dtype=np.float32))
        return torch.nn.functional.binary_cross_entropy_with_logits(out, target)

    def _data_loss(self, scores: np.ndarray, data: Dataset) -> float:
        return bce_from_logits(scores, data.y)

    def _step(
        self,
        module: torch_types.nn.Module,
        optimizer: Any,
        batch: tuple[Any, np.ndarray, np.ndarray | None],
        extra_grad: Callable[[], None],
    ) -> None:
        inputs, y, time = batch
        optimizer.zero_grad(set_to_none=False)
        loss = self._batch_loss(module(inputs).reshape(-1), y, time)
        loss.backward()
        extra_grad()
        optimizer.step()

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
            if self.task != "binary":
                raise ModelError(f"{self.name}: DP-SGD supports binary torch models only")
            return self._fit_dp_sgd(params, data, spec, rng)
        if spec.correction is not None:
            check_correction(params, spec.correction)
        # Permutations first, then the torch seed: the numpy loop draws the same batches.
        batches = list(minibatch_schedule(len(data), spec, rng))
        with _seeded(_seed(rng)) as torch:
            module = self._load(params, X.shape[1:])
            module.train()
            named = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
            optimizer = _optimizer(torch, [p for _, p in named], spec)
            extra_grad = _gradient_terms(torch, named, spec)
            inputs = torch.from_numpy(np.array(X, dtype=np.float32))
            y, time = np.asarray(data.y), data.time
            for idx in batches:
                if idx is None:
                    self._step(module, optimizer, (inputs, y, time), extra_grad)
                else:
                    batch = (
                        inputs[torch.from_numpy(idx)],
                        y[idx],
                        None if time is None else time[idx],
                    )
                    self._step(module, optimizer, batch, extra_grad)
            new = self._export(module, list(params))
            scores = self._forward(module, X)
        if not new.all_finite():
            raise ModelError(
                f"{self.name}: local training diverged (non-finite parameters); lower the "
                f"learning rate (lr={spec.lr})"
            )
        return FitResult(
            params=new,
            num_samples=len(data),
            num_steps=len(batches),
            metrics={"train_loss": self._data_loss(scores, data)},
        )

    def _fit_dp_sgd(
        self, params: ArrayRecord, data: Dataset, spec: LocalTrainSpec, rng: np.random.Generator
    ) -> FitResult:
        """DP-SGD with Opacus: per-sample clipping, noise, Poisson sampling (L2 as weight decay).

        Metrics: ``train_loss``, ``epsilon`` (this round alone, Opacus's RDP accountant at
        ``dp.delta``) and ``dp_noise_multiplier``; ``num_steps`` is the number of steps taken.
        """
        try:
            from opacus import PrivacyEngine
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ModelError(
                "DP-SGD for torch models needs opacus: pip install 'fedcare[dp]'"
            ) from err
        dp = spec.dp
        assert dp is not None
        if spec.correction is not None or spec.prox_mu:
            raise ModelError("DP-SGD for torch models supports neither SCAFFOLD nor FedProx")
        X = np.asarray(data.X, dtype=np.float32)
        event = dp.event(len(X), spec)
        q, steps = event.sampling_probability, event.count
        with _seeded(_seed(rng)) as torch:
            module = self._load(params, X.shape[1:])
            module.train()
            optimizer = _optimizer(torch, list(module.parameters()), spec, weight_decay=spec.l2)
            targets = torch.from_numpy(np.asarray(data.y, dtype=np.float32))
            dataset = torch.utils.data.TensorDataset(torch.from_numpy(X), targets)
            loader = torch.utils.data.DataLoader(dataset, batch_size=max(1, round(q * len(X))))
            with warnings.catch_warnings():
                # secure_mode is off (its CSPRNG needs torchcsprng; the noise comes from torch's
                # generator seeded from rng); hooks fire on outputs (inputs need no grad); one
                # round's small epsilon sits at Opacus's largest order
                for message in ("Secure RNG turned off", "Full backward hook", "Optimal order"):
                    warnings.filterwarnings("ignore", message=message)
                engine = PrivacyEngine(accountant="rdp")
                private, optimizer, loader = engine.make_private(
                    module=module,
                    optimizer=optimizer,
                    data_loader=loader,
                    noise_multiplier=event.noise_multiplier,
                    max_grad_norm=dp.max_grad_norm,
                    poisson_sampling=True,
                )
                taken = _opacus_steps(torch, private, optimizer, loader, steps)
                epsilon = float(engine.accountant.get_epsilon(dp.delta))
            new = self._export(private._module, list(params))
            scores = self._forward(private._module, X)
        metrics = {
            "train_loss": self._data_loss(scores, data),
            "epsilon": epsilon,
            "dp_noise_multiplier": event.noise_multiplier,
        }
        return FitResult(params=new, num_samples=len(X), num_steps=taken, metrics=metrics)

    # Evaluation --------------------------------------------------------------------------------
    def _forward(self, module: torch_types.nn.Module, X: np.ndarray) -> np.ndarray:
        """Raw outputs (logits or risk scores) as float64, in batches, without gradients."""
        torch = import_torch()
        module.eval()
        outs = []
        with torch.no_grad():
            for start in range(0, len(X), self.predict_batch_size):
                chunk = np.array(X[start : start + self.predict_batch_size], dtype=np.float32)
                outs.append(module(torch.from_numpy(chunk)).reshape(-1).double().numpy())
        return np.concatenate(outs)

    def _scores(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        X = check_features(X, model=self.name)
        with _seeded(None):  # construction draws an init that load_state_dict overwrites
            module = self._load(params, X.shape[1:])
        return self._forward(module, X)

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        return np.asarray(expit(self._scores(params, X)), dtype=np.float64)

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        check_targets(data, self.task, model=self.name)
        return self._data_loss(self._scores(params, data.X), data)


class TorchSurvivalAdapter(TorchAdapter):
    """A survival model around an ``nn.Module`` returning one risk score per example.

    Trained on the Breslow negative partial log-likelihood per event of each minibatch (0 for
    a batch without events); :meth:`predict` returns the risk score (higher: earlier event).
    """

    task: ClassVar[TaskType] = "survival"

    def _batch_loss(self, out: Any, y: np.ndarray, time: np.ndarray | None) -> Any:
        """Breslow negative partial log-likelihood per event of one batch (0 without events)."""
        torch = import_torch()
        assert time is not None  # checked in fit
        events = float(np.sum(y))
        if events == 0:
            return out.sum() * 0.0
        order = np.argsort(-np.asarray(time, dtype=np.float64), kind="stable")
        _, last = risk_set_bounds(np.asarray(time)[order])
        eta = out[torch.from_numpy(order)]
        log_risk = torch.logcumsumexp(eta, dim=0)[torch.from_numpy(last)]
        d = torch.from_numpy(np.asarray(y, dtype=np.float32)[order])
        return -(d * (eta - log_risk)).sum() / events

    def _data_loss(self, scores: np.ndarray, data: Dataset) -> float:
        assert data.time is not None
        return cox_loss_and_eta_grad(scores, data.y, data.time)[0]

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        return self._scores(params, X)


def make_torch_adapter(
    factory: ModuleFactory, task: TaskType = "binary", **options: Any
) -> TorchAdapter:
    """The torch adapter for ``task`` (``"binary"`` or ``"survival"``) around ``factory``."""
    if task == "binary":
        return TorchAdapter(factory, **options)
    if task == "survival":
        return TorchSurvivalAdapter(factory, **options)
    raise ModelError(f"unknown task {task!r} for a torch model; valid: ['binary', 'survival']")


def _optimizer(
    torch: ModuleType, parameters: list[Any], spec: LocalTrainSpec, *, weight_decay: float = 0.0
) -> Any:
    if spec.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=spec.lr, weight_decay=weight_decay)
    return torch.optim.SGD(
        parameters, lr=spec.lr, momentum=spec.momentum, weight_decay=weight_decay
    )


def _gradient_terms(
    torch: ModuleType, named: list[tuple[str, Any]], spec: LocalTrainSpec
) -> Callable[[], None]:
    """A callable adding L2, FedProx and SCAFFOLD terms to each parameter's ``.grad``."""
    centre = {k: p.detach().clone() for k, p in named} if spec.prox_mu else {}
    correction = (
        {k: torch.tensor(np.asarray(spec.correction[k]), dtype=p.dtype) for k, p in named}
        if spec.correction is not None
        else {}
    )
    decayed = {k for k, _ in named if not is_bias(k)} if spec.l2 else set()

    def add_terms() -> None:
        with torch.no_grad():
            for k, p in named:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                if k in decayed:
                    p.grad.add_(p, alpha=spec.l2)
                if centre:
                    p.grad.add_(p - centre[k], alpha=spec.prox_mu)
                if correction:
                    p.grad.add_(correction[k])

    return add_terms


def _opacus_steps(torch: Any, module: Any, optimizer: Any, loader: Any, steps: int) -> int:
    """Run ``steps`` private steps over Opacus's Poisson loader (epochs as needed)."""
    taken = 0
    while taken < steps:
        for inputs, target in loader:
            if taken == steps:
                break
            optimizer.zero_grad()
            out = module(inputs).reshape(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out, target)
            loss.backward()
            optimizer.step()
            taken += 1
    return taken
