"""Torch plumbing shared by the torch adapter and its DP-SGD path.

Importing torch lazily (:func:`import_torch`), seeding torch's global generator from an
injected ``rng`` without disturbing it (:func:`seeded`, :func:`draw_seed`), and the
L2/FedProx/SCAFFOLD terms added to gradients after ``backward()`` (:func:`gradient_terms`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from fedcare.errors import ModelError
from fedcare.models._validate import is_bias
from fedcare.models.base import LocalTrainSpec

#: Builds a fresh module for inputs of a given shape (without the batch axis).
ModuleFactory = Callable[[tuple[int, ...]], Any]
#: ``loss(outputs, target) -> scalar tensor``, the mean over the batch's examples.
LossFn = Callable[[Any, Any], Any]
#: ``optimizer(parameters, spec) -> torch.optim.Optimizer``.
OptimizerFactory = Callable[[list[Any], LocalTrainSpec], Any]
#: ``train_step(module, (inputs, target), spec) -> scalar loss tensor`` (before backward).
TrainStep = Callable[[Any, tuple[Any, Any], LocalTrainSpec], Any]
#: ``eval_step(module, inputs) -> raw outputs`` (logits, values or risks; no gradients).
EvalStep = Callable[[Any, Any], Any]

__all__ = [
    "DEVICE_ENV",
    "EvalStep",
    "LossFn",
    "ModuleFactory",
    "OptimizerFactory",
    "Placement",
    "TrainStep",
    "check_callable",
    "draw_seed",
    "gradient_terms",
    "import_torch",
    "seeded",
]


def import_torch() -> ModuleType:
    """Import and return ``torch``, or raise :class:`ModelError` saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            "PyTorch models need the torch extra: pip install 'fedcare[torch]'"
        ) from exc
    return torch


def check_callable(value: object, what: str) -> None:
    """ModelError unless ``value`` is callable or None."""
    if value is not None and not callable(value):
        raise ModelError(f"{what} must be callable or None, got {type(value).__name__}")


#: Guards torch's global generator while a section forks, seeds and uses it.
_GLOBAL_RNG_LOCK = threading.Lock()


@contextmanager
def seeded(seed: int | None) -> Iterator[ModuleType]:
    """Torch with its CPU generator seeded to ``seed`` (if given), restored afterwards."""
    torch = import_torch()
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield torch


def draw_seed(rng: np.random.Generator) -> int:
    """One torch seed drawn from ``rng``."""
    return int(rng.integers(2**63 - 1))


def gradient_terms(
    torch: ModuleType, named: list[tuple[str, Any]], spec: LocalTrainSpec
) -> Callable[[], None]:
    """A callable adding L2, FedProx and SCAFFOLD terms to each parameter's ``.grad``."""
    centre = {k: p.detach().clone() for k, p in named} if spec.prox_mu else {}
    correction = (
        {
            k: torch.tensor(np.asarray(spec.correction[k]), dtype=p.dtype, device=p.device)
            for k, p in named
        }
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


#: The environment variable a site's package runner sets from the site policy's ``devices``.
DEVICE_ENV = "FEDCARE_TORCH_DEVICE"


@dataclass(frozen=True)
class Placement:
    """Where a torch adapter computes: ``device`` (``None``: what the site allows, read from
    :data:`DEVICE_ENV`, default ``cpu``) and whether CUDA steps run in bfloat16 autocast."""

    device: str | None = None
    amp: bool = False

    def resolve(self, torch: ModuleType) -> Any:
        """The ``torch.device`` to use; CPU when CUDA is asked for but not available."""
        name = self.device or os.environ.get(DEVICE_ENV) or "cpu"
        if name.startswith("cuda") and not torch.cuda.is_available():
            name = "cpu"
        try:
            return torch.device(name)
        except RuntimeError as err:
            raise ModelError(f"torch device {name!r} is not valid: {err}") from None

    def autocast(self, torch: ModuleType, device: Any) -> Any:
        """Mixed precision on CUDA when ``amp`` is set; a no-op context otherwise."""
        if self.amp and device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()
