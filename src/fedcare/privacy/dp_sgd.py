"""Sample-level DP-SGD inside a site's training (Abadi et al. 2016).

Every step samples each training row independently with probability ``q = batch_size / n``
(Poisson sampling), clips each sampled row's gradient to L2 norm ``max_grad_norm``, sums,
adds ``N(0, (z * max_grad_norm)^2)`` and divides by the expected batch size ``q n``. A
round of ``T`` steps is the event ``DpEvent(z, q, T)``; the site reports it (reply ``info``
``dp_event``) and that round's epsilon alone (reply metric ``epsilon``), and the study's
per-site epsilon composes the events of every round it took part in.

Two engines:

* numpy logistic regression (:func:`logistic_dp_sgd`): per-example gradients are
  ``(sigmoid(x w + b) - y) [x, 1]``, so clipping is one vectorized scale per row;
* PyTorch models (:meth:`fedcare.models.torch.TorchAdapter.fit`): Opacus's ``PrivacyEngine``
  (``GradSampleModule``, ``DPOptimizer``, Poisson ``DPDataLoader``) and its RDP accountant.

The models depend on this module (a :class:`~fedcare.models.base.LocalTrainSpec` carries a
:class:`DpSgdSpec`), never the other way: what DP-SGD reads of local training is the
:class:`LocalSchedule` protocol.

Both account with the same event, so dp-accounting's RDP and Opacus's agree (tested).

A study gives ``noise_multiplier`` or ``target_epsilon``; with a target the site calibrates
``z`` itself (it alone knows ``n``) so that ``rounds`` rounds of its steps spend the target.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from scipy.special import expit

from fedcare.errors import ConfigError, ModelError
from fedcare.privacy.accounting.analysis import DpEvent, noise_multiplier_for_epsilon, rdp_epsilon
from fedcare.privacy.mechanisms import check_positive

if TYPE_CHECKING:
    from fedcare.records.arrays import ArrayRecord

__all__ = [
    "CONFIG_KEYS",
    "DpSgdSpec",
    "LocalSchedule",
    "dp_config",
    "dp_schedule",
    "dp_spec_from_config",
    "logistic_dp_sgd",
    "round_epsilon",
]

#: Task config keys that carry DP-SGD settings to the site.
CONFIG_KEYS = (
    "dp_noise_multiplier",
    "dp_target_epsilon",
    "dp_max_grad_norm",
    "dp_delta",
    "dp_rounds",
)


class LocalSchedule(Protocol):
    """What DP-SGD reads of a site's local training (a ``LocalTrainSpec`` is one)."""

    @property
    def epochs(self) -> int: ...
    @property
    def max_steps(self) -> int | None: ...
    @property
    def batch_size(self) -> int | None: ...
    @property
    def lr(self) -> float: ...
    @property
    def optimizer(self) -> str: ...
    @property
    def momentum(self) -> float: ...
    @property
    def l2(self) -> float: ...
    @property
    def prox_mu(self) -> float: ...
    @property
    def correction(self) -> ArrayRecord | None: ...


@dataclass(frozen=True)
class DpSgdSpec:
    """DP-SGD settings: ``noise_multiplier`` or ``target_epsilon`` (over ``rounds`` rounds)."""

    max_grad_norm: float
    delta: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    rounds: int = 1

    def __post_init__(self) -> None:
        check_positive("max_grad_norm", self.max_grad_norm)
        if not 0 < self.delta < 1:
            raise ConfigError(f"dp delta must be in (0, 1), got {self.delta!r}")
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError(
                "DP-SGD needs exactly one of noise_multiplier and target_epsilon, got "
                f"{self.noise_multiplier!r} and {self.target_epsilon!r}"
            )
        if self.noise_multiplier is not None:
            check_positive("noise_multiplier", self.noise_multiplier)
        if self.target_epsilon is not None:
            check_positive("target_epsilon", self.target_epsilon)
        if self.rounds < 1:
            raise ConfigError(f"dp rounds must be >= 1, got {self.rounds!r}")

    def event(self, num_rows: int, train: LocalSchedule) -> DpEvent:
        """This round's event at a site with ``num_rows`` rows training as ``train`` says."""
        q, steps = dp_schedule(num_rows, train)
        z = self.noise_multiplier
        if z is None:
            assert self.target_epsilon is not None
            z = _calibrated(self.target_epsilon, self.delta, q, steps * self.rounds)
        return DpEvent(z, q, steps)


@functools.lru_cache(maxsize=64)
def _calibrated(target: float, delta: float, q: float, count: int) -> float:
    return noise_multiplier_for_epsilon(target, delta, sampling_probability=q, count=count)


def dp_schedule(num_rows: int, train: LocalSchedule) -> tuple[float, int]:
    """``(q, steps)``: the sampling probability and the steps of one round of local training.

    ``q = batch_size / n`` (1 for full batch); steps are ``max_steps`` or ``epochs * ceil(n /
    batch_size)``, as in the non-private loop.
    """
    if num_rows < 1:
        raise ModelError("cannot train on a dataset with no rows")
    batch = min(train.batch_size or num_rows, num_rows)
    steps = train.max_steps or train.epochs * math.ceil(num_rows / batch)
    return batch / num_rows, int(steps)


def dp_config(
    *,
    max_grad_norm: float,
    delta: float,
    rounds: int,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
) -> dict[str, float | int]:
    """The task config entries for DP-SGD (validated), which :func:`dp_spec_from_config` reads."""
    spec = DpSgdSpec(max_grad_norm, delta, noise_multiplier, target_epsilon, rounds)
    out: dict[str, float | int] = {
        "dp_max_grad_norm": spec.max_grad_norm,
        "dp_delta": spec.delta,
        "dp_rounds": spec.rounds,
    }
    if spec.noise_multiplier is not None:
        out["dp_noise_multiplier"] = spec.noise_multiplier
    if spec.target_epsilon is not None:
        out["dp_target_epsilon"] = spec.target_epsilon
    return out


def dp_spec_from_config(config: Mapping[str, Any]) -> DpSgdSpec | None:
    """The DP-SGD spec in a task config, or None when it has no ``dp_*`` keys.

    Raises
    ------
    ConfigError
        For a partial or invalid set of keys (naming them).
    """
    if not any(k in config for k in CONFIG_KEYS):
        return None
    for key in ("dp_max_grad_norm", "dp_delta"):
        if key not in config:
            raise ConfigError(f"task config has DP-SGD settings but no {key!r}")
    nm, te = config.get("dp_noise_multiplier"), config.get("dp_target_epsilon")
    return DpSgdSpec(
        max_grad_norm=float(config["dp_max_grad_norm"]),
        delta=float(config["dp_delta"]),
        noise_multiplier=None if nm is None else float(nm),
        target_epsilon=None if te is None else float(te),
        rounds=int(config.get("dp_rounds", 1)),
    )


def logistic_dp_sgd(
    params: ArrayRecord,
    X: np.ndarray,
    y: np.ndarray,
    train: LocalSchedule,
    dp: DpSgdSpec,
    rng: np.random.Generator,
) -> tuple[ArrayRecord, DpEvent]:
    """DP-SGD for ``{"weight": (d,), "bias": ()}`` logistic regression; params not changed.

    Plain SGD (with ``train.momentum``, ``train.l2`` on the weight and ``train.prox_mu``, all
    data-independent); clipping covers the data gradient of weight and bias together.

    Returns
    -------
    tuple
        ``(new params, this round's DpEvent)``.
    """
    if train.optimizer != "sgd" or train.correction is not None:
        raise ModelError("DP-SGD for logistic regression runs plain SGD (no adam, no SCAFFOLD)")
    n = len(X)
    event = dp.event(n, train)
    q, steps, z, clip = (
        event.sampling_probability,
        event.count,
        event.noise_multiplier,
        dp.max_grad_norm,
    )
    Xb = np.hstack([np.asarray(X, dtype=np.float64), np.ones((n, 1))])
    y = np.asarray(y, dtype=np.float64)
    theta0 = np.concatenate([np.asarray(params["weight"], np.float64), [float(params["bias"])]])
    theta, velocity = theta0.copy(), np.zeros_like(theta0)
    decay = np.r_[np.full(theta0.size - 1, train.l2), 0.0]
    for _ in range(steps):
        rows = np.flatnonzero(rng.random(n) < q) if q < 1 else np.arange(n)
        xb = Xb[rows]
        per_example = (expit(xb @ theta) - y[rows])[:, None] * xb
        norms = np.linalg.norm(per_example, axis=1)
        scale = np.minimum(1.0, clip / np.maximum(norms, 1e-12))
        noisy = (per_example * scale[:, None]).sum(axis=0) + rng.normal(0.0, z * clip, theta.size)
        grad = noisy / (q * n) + decay * theta + train.prox_mu * (theta - theta0)
        velocity = train.momentum * velocity + grad if train.momentum else grad
        theta = theta - train.lr * velocity
    if not np.isfinite(theta).all():
        raise ModelError(f"DP-SGD diverged (non-finite parameters); lower lr={train.lr}")
    new = params.unflatten(theta) if list(params) == ["weight", "bias"] else None
    if new is None:
        raise ModelError(f"logistic params must be ['weight', 'bias'], got {list(params)}")
    return new, event


def round_epsilon(event: DpEvent, delta: float) -> float:
    """Epsilon of one round's event alone (dp-accounting RDP)."""
    return rdp_epsilon([event], delta)
