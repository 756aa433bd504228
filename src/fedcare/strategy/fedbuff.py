"""FedBuff: buffered asynchronous aggregation with staleness weighting (the math and the strategy).

Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation", AISTATS 2022,
Algorithm 1. The server holds model version ``t``; up to ``concurrency`` sites train at once,
each on the version it was sent. A site that finishes sends its update; in the paper's notation
``Delta_k = y_0 - y_Q`` (the model it was sent minus its trained model) and the server steps
``w <- w - eta_g * Delta_bar``. fedcare's sites send ``local - global`` (the opposite sign), so
the same step reads::

    x_{t+1} = x_t + eta_g * (1/K) * sum_{i in buffer} s(tau_i) * Delta_i,
    s(tau) = 1 / sqrt(1 + tau),  tau_i = t - t_sent(i)

taken once the buffer holds ``K`` (``buffer_size``) updates; then ``t`` becomes ``t + 1`` and
the buffer empties. ``s`` is the paper's polynomial staleness scaling (its experiments use
``1/sqrt(1 + tau)``). The ``1/K`` is the paper's: weights are *not* renormalized, so stale
updates shrink the step.

Weighting by rows (``weighting: rows``, not in the paper): ``(1/K) * sum s_i Delta_i`` becomes
``sum s_i n_i Delta_i / sum n_i`` (``n_i`` the site's training rows), the FedAvg weighting with
staleness scaling on top; with equal rows it is the paper's step. Default: ``uniform`` (the
paper's).

Every update is screened before it enters the buffer as the synchronous loop screens a reply
(:mod:`fedcare.strategy.screening`, :class:`~fedcare.aggregation.validate.ValidateUpdates`):
the template's arrays, shapes and dtypes, finite values, and a weight within the rows its site
declared (:func:`update_problem`); the asynchronous driver
(:mod:`fedcare.strategy.async_loop`) also checks that it answers an open task.

Privacy (:func:`check_fedbuff_study`): FedBuff needs each site's update on its own, as it
arrives, so it runs in privacy mode ``open`` only (local DP-SGD at the sites allowed, as each
site clips and noises its own training); secure aggregation, ``private`` and ``encrypted`` need
a fixed cohort's inputs summed together, and central DP's accountant a cohort sampled per round.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fedcare.aggregation.base import Measurements
from fedcare.aggregation.blockwise import all_finite
from fedcare.aggregation.validate import shape_problem
from fedcare.errors import ConfigError, ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply
from fedcare.strategy.base import StrategyState
from fedcare.strategy.fedopt import FedOpt
from fedcare.strategy.screening import weight_problem

if TYPE_CHECKING:
    from fedcare.records.study import StudyConfig

__all__ = [
    "BufferedUpdate",
    "FedBuff",
    "check_fedbuff_study",
    "fedbuff_step",
    "staleness_weight",
    "update_problem",
]

Weighting = Literal["uniform", "rows"]

#: Why each privacy mode other than ``open`` cannot run FedBuff.
REFUSED_MODES: dict[str, str] = {
    "secure": (
        "secure aggregation's pairwise masks cancel only when a fixed cohort's masked inputs "
        "are summed together in one round; FedBuff takes each update on its own as it arrives, "
        "from sites that trained different model versions, so there is no cohort sum to unmask"
    ),
    "private": (
        "its DP noise is shared among a fixed cohort whose masked inputs are summed together "
        "(secure aggregation); FedBuff takes each update on its own as it arrives, so neither "
        "the masks cancel nor the noise adds up to the accounted mechanism"
    ),
    "encrypted": (
        "its sites decrypt only a cohort's summed ciphertext (CKKS); FedBuff needs each "
        "update on its own as it arrives, scaled by its staleness, so there is no cohort sum "
        "to decrypt"
    ),
}
CENTRAL_DP_REFUSED = (
    "central DP's accountant assumes a cohort sampled per round whose clipped sum is noised "
    "once; FedBuff's buffers mix updates of different versions and sites as they arrive, "
    "outside that analysis (local DP-SGD at the sites, privacy.dp.local_dp_sgd, is allowed)"
)


def staleness_weight(staleness: int) -> float:
    """FedBuff's staleness scaling ``s(tau) = 1 / sqrt(1 + tau)``.

    Raises
    ------
    ValidationError
        For a negative or non-integer staleness.
    """
    if isinstance(staleness, bool) or not isinstance(staleness, (int, np.integer)):
        raise ValidationError(f"staleness must be an integer, got {staleness!r}")
    if staleness < 0:
        raise ValidationError(f"staleness must be >= 0, got {staleness}")
    return 1.0 / math.sqrt(1.0 + float(staleness))


@dataclass(frozen=True)
class BufferedUpdate:
    """One screened update waiting in the buffer."""

    site_id: str
    #: The model version the site trained (its task's ``round``).
    sent_version: int
    #: ``t_now - sent_version`` when it arrived.
    staleness: int
    delta: ArrayRecord
    num_samples: int

    @property
    def weight(self) -> float:
        """Its staleness scaling ``s(staleness)``."""
        return staleness_weight(self.staleness)


def fedbuff_step(
    params: ArrayRecord,
    buffer: Sequence[BufferedUpdate],
    *,
    server_lr: float,
    weighting: Weighting = "uniform",
) -> ArrayRecord:
    """The server step of a full buffer (see the module docstring), a new record.

    Sums in float64 in buffer order, then casts back to each parameter's dtype; ``params``
    and the buffered arrays are not changed.

    Raises
    ------
    AggregationError
        For an empty buffer, or rows weighting with no rows at all.
    """
    from fedcare.errors import AggregationError

    if not buffer:
        raise AggregationError("a FedBuff step needs at least one buffered update")
    if weighting == "rows":
        total = float(sum(u.num_samples for u in buffer))
        if total <= 0:
            raise AggregationError("FedBuff rows weighting: the buffered updates have no rows")
        coefs = [u.weight * u.num_samples / total for u in buffer]
    else:
        coefs = [u.weight / len(buffer) for u in buffer]
    out: dict[str, np.ndarray] = {}
    for name, value in params.items():
        step = np.zeros(value.shape, dtype=np.float64)
        for coef, update in zip(coefs, buffer, strict=True):
            step += coef * np.asarray(update.delta[name], dtype=np.float64)
        out[name] = (value.astype(np.float64) + server_lr * step).astype(value.dtype)
    return ArrayRecord(out, copy=False)


def update_problem(template: ArrayRecord, reply: Reply, declared: Mapping[str, int]) -> str | None:
    """Why ``reply``'s update cannot enter the buffer, or ``None``: missing, extra or wrongly
    shaped arrays, a dtype other than the template's, non-finite values, or a weight above the
    rows its site declared."""
    wrong = shape_problem(template, reply.site_id, reply.arrays)
    if wrong is not None:
        return wrong
    bad = [k for k, v in reply.arrays.items() if not all_finite(v)]
    if bad:
        return f"update from site {reply.site_id!r} has NaN or infinite values in {bad}"
    return weight_problem(reply, declared)


def check_fedbuff_study(study: StudyConfig) -> None:
    """Raise ``ConfigError`` when ``study`` asks FedBuff for what it cannot do, with the reason:
    a privacy mode other than ``open``, central DP, aggregation layers or compression."""
    mode = study.privacy.mode
    if mode in REFUSED_MODES:
        raise ConfigError(
            f"study {study.name!r}: strategy 'fedbuff' cannot run in privacy mode {mode!r}: "
            f"{REFUSED_MODES[mode]}; use mode 'open' (with privacy.dp.local_dp_sgd for DP)"
        )
    dp = study.privacy.dp
    if dp is not None and dp.central:
        raise ConfigError(
            f"study {study.name!r}: strategy 'fedbuff' refuses central DP: " + (CENTRAL_DP_REFUSED)
        )
    if study.aggregation:
        names = [layer.name for layer in study.aggregation]
        raise ConfigError(
            f"study {study.name!r}: strategy 'fedbuff' takes no aggregation layers ({names}): "
            "robust means and norm bounds combine a round's updates together, FedBuff scales "
            "each update by its staleness as it arrives"
        )
    if study.compression.active:
        raise ConfigError(
            f"study {study.name!r}: strategy 'fedbuff' does not decode compressed updates yet "
            f"(compression {study.compression.method!r}); set compression.method to 'none'"
        )


class FedBuff(FedOpt):
    """Buffered asynchronous aggregation (see the module docstring); run by
    :func:`fedcare.strategy.async_loop.run_async`, not the synchronous round loop.

    Sites train as under FedAvg (``algorithm: fedavg``). A "round" of the study is one server
    step (a new model version); ``rounds`` steps end the study.

    Parameters
    ----------
    buffer_size:
        ``K``: updates per server step.
    concurrency:
        ``C``: sites training at once (capped at the number of sites).
    server_lr:
        ``eta_g``: the server learning rate.
    max_staleness:
        Updates staler than this are dropped (and recorded); ``None``: no cap.
    weighting:
        ``uniform`` (the paper's ``1/K``) or ``rows`` (by each site's training rows).
    **kwargs:
        ``train``, ``fraction``, ``min_sites``, ``aggregator`` (its validation is not used: the
        buffer screens each update with :func:`update_problem`).
    """

    name = "fedbuff"
    #: The round loop runs this strategy asynchronously (:mod:`fedcare.strategy.async_loop`).
    asynchronous = True

    def __init__(
        self,
        *,
        buffer_size: int = 2,
        concurrency: int = 4,
        server_lr: float = 1.0,
        max_staleness: int | None = None,
        weighting: Weighting = "uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (("buffer_size", buffer_size), ("concurrency", concurrency)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"fedbuff {name} must be an integer >= 1, got {value!r}")
        if isinstance(server_lr, bool) or not isinstance(server_lr, (int, float)):
            raise ConfigError(f"fedbuff server_lr must be a number > 0, got {server_lr!r}")
        if not (math.isfinite(server_lr) and server_lr > 0):
            raise ConfigError(f"fedbuff server_lr must be a number > 0, got {server_lr!r}")
        if max_staleness is not None and (
            isinstance(max_staleness, bool)
            or not isinstance(max_staleness, int)
            or max_staleness < 0
        ):
            raise ConfigError(
                f"fedbuff max_staleness must be an integer >= 0 or null, got {max_staleness!r}"
            )
        if weighting not in ("uniform", "rows"):
            raise ConfigError(f"fedbuff weighting must be 'uniform' or 'rows', got {weighting!r}")
        self.buffer_size = buffer_size
        self.concurrency = concurrency
        self.server_lr = float(server_lr)
        self.max_staleness = max_staleness
        self.weighting: Weighting = weighting

    def step(self, state: StrategyState, buffer: Sequence[BufferedUpdate]) -> StrategyState:
        """The state after the server step of ``buffer`` (params only change)."""
        params = fedbuff_step(
            state.params, buffer, server_lr=self.server_lr, weighting=self.weighting
        )
        return StrategyState(
            params=params,
            aggregator=state.aggregator,
            optimizer=state.optimizer,
            arrays=state.arrays,
            meta=state.meta,
        )

    def aggregate_fit(
        self, round: int, state: StrategyState, replies: Iterable[Reply], *, num_available: int
    ) -> tuple[StrategyState, Measurements]:
        raise ConfigError(
            "strategy 'fedbuff' runs in the asynchronous loop (fedcare.strategy.async_loop), "
            "not the synchronous round loop"
        )
