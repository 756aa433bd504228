"""DP-SGD for PyTorch models through Opacus (extra ``dp``): the torch engine of
:mod:`fedcare.privacy.dp_sgd`.

Importing this module imports neither torch nor Opacus; calling :func:`opacus_dp_sgd` does,
and raises an error naming the extra to install when Opacus is missing. Opacus runs with
``secure_mode`` off (its CSPRNG needs ``torchcsprng``): the noise comes from torch's generator,
seeded from the site's generator (OS entropy at a real site, the task seed in simulation).
The spec, the schedule and the accounting event are the privacy package's
(:class:`~fedcare.privacy.dp_sgd.DpSgdSpec`); this module only runs the steps.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fedcare.errors import ModelError
from fedcare.models._torch_runtime import draw_seed, seeded
from fedcare.models.base import FitResult, LocalTrainSpec

if TYPE_CHECKING:
    from fedcare.data.base import Dataset
    from fedcare.privacy.dp_sgd import DpSgdSpec
    from fedcare.records.arrays import ArrayRecord

__all__ = ["opacus_dp_sgd"]


class _TorchModel(Protocol):
    """What DP-SGD uses of a :class:`~fedcare.models.torch.TorchAdapter`."""

    def _load(self, params: ArrayRecord, input_shape: tuple[int, ...]) -> Any: ...

    @staticmethod
    def _export(module: Any, order: list[str]) -> ArrayRecord: ...

    def _forward(self, module: Any, X: np.ndarray) -> np.ndarray: ...

    def _data_loss(self, scores: np.ndarray, data: Dataset) -> float: ...


def opacus_dp_sgd(
    adapter: _TorchModel,
    params: ArrayRecord,
    data: Dataset,
    train: LocalTrainSpec,
    dp: DpSgdSpec,
    rng: np.random.Generator,
) -> FitResult:
    """DP-SGD for a torch model with Opacus (per-sample clipping, noise, Poisson sampling).

    Metrics: ``train_loss``, ``epsilon`` (this round alone, Opacus's RDP accountant at
    ``dp.delta``) and ``dp_noise_multiplier``; ``num_steps`` is the number of steps taken.
    """
    try:
        from opacus import PrivacyEngine
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ModelError("DP-SGD for torch models needs opacus: pip install 'fedcare[dp]'") from err
    if train.correction is not None or train.prox_mu:
        raise ModelError("DP-SGD for torch models supports neither SCAFFOLD nor FedProx")
    X = np.asarray(data.X, dtype=np.float32)
    event = dp.event(len(X), train)
    q, steps = event.sampling_probability, event.count
    with seeded(draw_seed(rng)) as torch:
        module = adapter._load(params, X.shape[1:])
        module.train()
        optimizer = _optimizer(torch, module, train)
        targets = torch.from_numpy(np.asarray(data.y, dtype=np.float32))
        dataset = torch.utils.data.TensorDataset(torch.from_numpy(X), targets)
        loader = torch.utils.data.DataLoader(dataset, batch_size=max(1, round(q * len(X))))
        with warnings.catch_warnings():
            # secure_mode is off (documented above); hooks fire on outputs (inputs need no
            # grad); one round's small epsilon sits at Opacus's largest order
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
        new = adapter._export(private._module, list(params))
        scores = adapter._forward(private._module, X)
    return FitResult(
        params=new,
        num_samples=len(X),
        num_steps=taken,
        metrics={
            "train_loss": adapter._data_loss(scores, data),
            "epsilon": epsilon,
            "dp_noise_multiplier": event.noise_multiplier,
        },
    )


def _optimizer(torch: Any, module: Any, train: LocalTrainSpec) -> Any:
    """The local optimizer Opacus wraps (L2 as weight decay)."""
    if train.optimizer == "adam":
        return torch.optim.Adam(module.parameters(), lr=train.lr, weight_decay=train.l2)
    return torch.optim.SGD(
        module.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.l2
    )


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
