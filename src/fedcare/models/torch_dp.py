"""Sample-level DP-SGD for torch adapters, through Opacus's ``PrivacyEngine`` (extra ``dp``).

The spec, its schedule and its accounting event are :mod:`fedcare.privacy.dp_sgd`'s; this
module runs the steps: per-sample clipping, noise and Poisson sampling by Opacus, L2 as weight
decay. Every task whose loss is a mean over examples works (binary, multiclass, multilabel,
regression, with the default or a custom ``loss``); survival's partial likelihood couples the
rows of a batch, and a custom ``train_step`` hides the loss from Opacus, so both are refused.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.models.base import FitResult, LocalTrainSpec
from fedcare.models.torch_runtime import draw_seed, seeded
from fedcare.models.torch_tasks import target_tensor
from fedcare.records.arrays import ArrayRecord

#: A :class:`fedcare.models.torch.TorchAdapter` (not imported: that module imports this one).
TorchAdapter = Any

__all__ = ["fit_dp_sgd"]


def _refusals(adapter: TorchAdapter, spec: LocalTrainSpec) -> list[str]:
    reasons = []
    if adapter.task == "survival":
        reasons.append("a survival loss (the partial likelihood is not a mean over rows)")
    if adapter.train_step is not None:
        reasons.append("a custom train_step (Opacus needs the per-example loss)")
    if spec.correction is not None:
        reasons.append("a SCAFFOLD correction")
    if spec.prox_mu:
        reasons.append(f"a FedProx term (prox_mu={spec.prox_mu})")
    return reasons


def fit_dp_sgd(
    adapter: TorchAdapter,
    params: ArrayRecord,
    data: Dataset,
    spec: LocalTrainSpec,
    rng: np.random.Generator,
) -> FitResult:
    """DP-SGD with Opacus: per-sample clipping, noise, Poisson sampling (L2 as weight decay).

    Returns
    -------
    FitResult
        Metrics ``train_loss``, ``epsilon`` (this round alone, Opacus's RDP accountant at
        ``dp.delta``) and ``dp_noise_multiplier``; ``num_steps`` is the number of steps taken.

    Raises
    ------
    ModelError
        Opacus missing, or DP-SGD asked together with what it cannot honour (named).
    """
    try:
        from opacus import PrivacyEngine
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ModelError("DP-SGD for torch models needs opacus: pip install 'fedcare[dp]'") from err
    refused = _refusals(adapter, spec)
    if refused:
        raise ModelError(f"{adapter.name}: DP-SGD cannot be combined with {', '.join(refused)}")
    dp = spec.dp
    assert dp is not None
    X = np.asarray(data.X, dtype=np.float32)
    event = dp.event(len(X), spec)
    q, steps = event.sampling_probability, event.count
    with seeded(draw_seed(rng)) as torch:
        module = adapter.load(params, X.shape[1:], skip_init=False)  # noise follows it
        module.train()
        optimizer = adapter.make_optimizer(
            torch, list(module.parameters()), spec, weight_decay=spec.l2
        )
        targets = target_tensor(torch, adapter.task, np.asarray(data.y), data.time)
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
            taken = _opacus_steps(adapter, torch, private, optimizer, loader, steps)
            epsilon = float(engine.accountant.get_epsilon(dp.delta))
        new = adapter.export(private._module, list(params))
        raw = adapter.forward(private._module, X)
    metrics = {
        "train_loss": adapter.data_loss(raw, data),
        "epsilon": epsilon,
        "dp_noise_multiplier": event.noise_multiplier,
    }
    return FitResult(params=new, num_samples=len(X), num_steps=taken, metrics=metrics, owned=True)


def _opacus_steps(
    adapter: TorchAdapter, torch: Any, module: Any, optimizer: Any, loader: Any, steps: int
) -> int:
    """Run ``steps`` private steps over Opacus's Poisson loader (epochs as needed)."""
    taken = 0
    while taken < steps:
        for inputs, target in loader:
            if taken == steps:
                break
            optimizer.zero_grad()
            out = adapter.head.shape_outputs(module(inputs), len(inputs), model=adapter.name)
            adapter.criterion(torch, out, target).backward()
            optimizer.step()
            taken += 1
    return taken
