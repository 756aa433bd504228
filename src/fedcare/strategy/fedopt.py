"""FedAvg and its family: FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad.

All share one shape: sites train locally from the global params and send ``local - global``;
the aggregator forms the (sample-weighted) mean update; a server optimizer turns it into a
step. They differ only in the site's objective (FedProx's proximal term) and the server
optimizer (momentum, Adam, Yogi, Adagrad), so they are one class with presets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

import fedcare.strategy.server_opt as server_opt
from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.aggregation.mean import WeightedMean
from fedcare.aggregation.validate import DEFAULT_OUTLIER_RATIO, ValidateUpdates
from fedcare.errors import ConfigError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Scalar
from fedcare.strategy.base import Instruction, Strategy, StrategyState, sample_sites

__all__ = ["FedAdagrad", "FedAdam", "FedAvg", "FedAvgM", "FedOpt", "FedProx", "FedYogi"]


def default_aggregator() -> Aggregator[Any]:
    """Validation (shapes, dtypes, finite values, one outlying norm) around a sample-weighted
    mean."""
    return ValidateUpdates(WeightedMean(), outlier_ratio=DEFAULT_OUTLIER_RATIO)


def contributions_of(replies: Iterable[Reply]) -> Iterator[Contribution]:
    """Each reply's update weighted by its sample count; no reference kept once passed on."""
    for r in replies:
        contribution = Contribution(site_id=r.site_id, arrays=r.arrays, weight=float(r.num_samples))
        del r
        yield contribution
        del contribution


class FedOpt(Strategy):
    """Local training, a weighted mean of updates, then a server optimizer step.

    Parameters
    ----------
    optimizer:
        The server optimizer applied to the mean update.
    aggregator:
        How updates combine; defaults to validation around a sample-weighted mean.
    prox_mu:
        FedProx's proximal coefficient sent to sites (0 for none).
    **kwargs:
        ``train``, ``fraction``, ``min_sites`` (see :class:`Strategy`).
    """

    name = "fedopt"
    algorithm = "fedavg"  # what the site runtime does locally

    def __init__(
        self,
        *,
        optimizer: server_opt.ServerOptimizer | None = None,
        aggregator: Aggregator[Any] | None = None,
        prox_mu: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not prox_mu >= 0:
            raise ConfigError(f"prox_mu must be >= 0, got {prox_mu!r}")
        self.optimizer = optimizer or server_opt.SGD()
        self.aggregator = aggregator or default_aggregator()
        self.prox_mu = prox_mu

    def aggregation_template(self, params: ArrayRecord) -> ArrayRecord:
        """The shape of one site's contribution."""
        return params

    def init_state(self, params: ArrayRecord) -> StrategyState:
        return StrategyState(
            params=params,
            # a skeleton: the template is kept all study, the initial model need not be
            aggregator=self.aggregator.init(self.aggregation_template(params.skeleton())),
            optimizer=self.optimizer.init(params),
        )

    def site_config(self) -> dict[str, Scalar]:
        config: dict[str, Scalar] = {**self.train, "algorithm": self.algorithm}
        if self.prox_mu > 0:
            config["prox_mu"] = self.prox_mu
        return config

    def configure_fit(
        self, round: int, state: StrategyState, sites: Sequence[str], rng: np.random.Generator
    ) -> list[Instruction]:
        chosen = sample_sites(
            sites, fraction=self.fraction, min_sites=self.min_sites, rng=rng, round=round
        )
        config = self.site_config()
        return [Instruction(site_id=s, config=config) for s in chosen]

    def _mean_update(
        self, state: StrategyState, replies: Iterable[Reply]
    ) -> tuple[ArrayRecord, Any, Measurements]:
        return self.aggregator.update(state.aggregator, contributions_of(replies))

    def _apply(
        self, state: StrategyState, delta: ArrayRecord, *, consume: bool = False
    ) -> tuple[ArrayRecord, server_opt.ServerOptState]:
        if consume and isinstance(self.optimizer, server_opt.SGD):
            return self.optimizer.apply(state.params, delta, state.optimizer, consume=True)
        return self.optimizer.apply(state.params, delta, state.optimizer)

    def aggregate_fit(
        self, round: int, state: StrategyState, replies: Iterable[Reply], *, num_available: int
    ) -> tuple[StrategyState, Measurements]:
        delta, agg_state, measurements = self._mean_update(state, replies)
        update_norm = delta.norm()  # before the step: the new params may go into delta
        params, opt_state = self._apply(state, delta, consume=True)
        del delta
        new_state = StrategyState(
            params=params, aggregator=agg_state, optimizer=opt_state, arrays=state.arrays
        )
        return new_state, {**measurements, "update_norm": update_norm}


class FedAvg(FedOpt):
    """Sample-weighted FedAvg (McMahan et al. 2017), optional server learning rate."""

    name = "fedavg"

    def __init__(self, *, server_lr: float = 1.0, **kwargs: Any) -> None:
        super().__init__(optimizer=server_opt.SGD(lr=server_lr), **kwargs)


class FedProx(FedOpt):
    """FedAvg with a proximal term ``mu/2 ||w - w_global||^2`` at each site (Li et al. 2020)."""

    name = "fedprox"

    def __init__(self, *, mu: float = 0.01, server_lr: float = 1.0, **kwargs: Any) -> None:
        if not mu > 0:
            raise ConfigError(f"FedProx mu must be > 0, got {mu!r}")
        super().__init__(optimizer=server_opt.SGD(lr=server_lr), prox_mu=mu, **kwargs)


class FedAvgM(FedOpt):
    """FedAvg with server momentum (Hsu et al. 2019)."""

    name = "fedavgm"

    def __init__(self, *, server_lr: float = 1.0, momentum: float = 0.9, **kwargs: Any) -> None:
        super().__init__(optimizer=server_opt.SGD(lr=server_lr, momentum=momentum), **kwargs)


def _adaptive(cls: type[server_opt._Adaptive], options: Mapping[str, Any]) -> server_opt._Adaptive:
    return cls(
        lr=options.get("server_lr", 0.01),
        beta1=options.get("beta1", 0.9),
        beta2=options.get("beta2", 0.99),
        tau=options.get("tau", 1e-3),
    )


class FedAdam(FedOpt):
    """FedOpt with a server Adam (Reddi et al. 2021)."""

    name = "fedadam"
    _server: type[server_opt._Adaptive] = server_opt.Adam

    def __init__(
        self,
        *,
        server_lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        opts = {"server_lr": server_lr, "beta1": beta1, "beta2": beta2, "tau": tau}
        super().__init__(optimizer=_adaptive(self._server, opts), **kwargs)


class FedYogi(FedAdam):
    """FedOpt with a server Yogi (Reddi et al. 2021)."""

    name = "fedyogi"
    _server = server_opt.Yogi


class FedAdagrad(FedAdam):
    """FedOpt with a server Adagrad (Reddi et al. 2021)."""

    name = "fedadagrad"
    _server = server_opt.Adagrad
