"""Server optimizers: init/update transforms applied to the aggregated update.

The aggregated update ``delta`` (mean of ``local - global``) is a pseudo-gradient pointing
downhill. Each optimizer turns it into a step that the strategy adds to the global params
(Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2, and Hsu et al. 2019
for server momentum). State is explicit and returned; inputs are never mutated.

:meth:`ServerOptimizer.apply` gives the new params directly. Plain SGD (FedAvg, FedProx: no
momentum) computes them block by block, ``params + lr * delta`` in float64 and converted to the
params' dtype, with one block of temporaries: bitwise what the whole-array steps give, without
their float64 copies of the model (the step, ``lr * step`` and the float64 sum). It keeps no
moment (the previous round's update is not needed). The adaptive optimizers and momentum keep
their float64 moments and whole-array temporaries (not bounded).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from fedcare.aggregation.blockwise import BLOCK, blocks, flat, release_pages
from fedcare.errors import ConfigError
from fedcare.records.arrays import ArrayRecord

__all__ = ["SGD", "Adagrad", "Adam", "ServerOptState", "ServerOptimizer", "Yogi"]


@dataclass(frozen=True)
class ServerOptState:
    """First and second moment estimates (empty records when unused)."""

    m: ArrayRecord
    v: ArrayRecord
    step: int = 0


class ServerOptimizer(ABC):
    """Turns an aggregated update into a step on the global parameters."""

    @abstractmethod
    def init(self, params: ArrayRecord) -> ServerOptState:
        """The initial state for parameters shaped like ``params``.

        Parameters
        ----------
        params:
            The global parameters.

        Returns
        -------
        ServerOptState
            Zeroed moments.
        """

    @abstractmethod
    def update(
        self, delta: ArrayRecord, state: ServerOptState
    ) -> tuple[ArrayRecord, ServerOptState]:
        """The step to add to the global params, and the new state.

        Parameters
        ----------
        delta:
            The aggregated update (mean of ``local - global``).
        state:
            The current state.

        Returns
        -------
        tuple
            ``(step, new_state)``.
        """

    def apply(
        self, params: ArrayRecord, delta: ArrayRecord, state: ServerOptState
    ) -> tuple[ArrayRecord, ServerOptState]:
        """The new global params (``params + step``, in the params' dtypes) and the new state.

        Parameters
        ----------
        params:
            The global parameters.
        delta:
            The aggregated update.
        state:
            The current state.

        Returns
        -------
        tuple
            ``(new_params, new_state)``.
        """
        step, new_state = self.update(delta, state)
        return params.zip_map(step, lambda p, s: (p + s).astype(p.dtype)), new_state


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"server optimizer option {name} must be > 0, got {value!r}")


class SGD(ServerOptimizer):
    """``x += lr * m`` with ``m = momentum * m + delta`` (FedAvg; FedAvgM with momentum)."""

    def __init__(self, lr: float = 1.0, momentum: float = 0.0) -> None:
        _check_positive(lr=lr)
        if not 0 <= momentum < 1:
            raise ConfigError(f"server momentum must be in [0, 1), got {momentum!r}")
        self.lr, self.momentum = lr, momentum

    def init(self, params: ArrayRecord) -> ServerOptState:
        if self.momentum == 0:  # no moment to keep
            return ServerOptState(m=ArrayRecord(), v=ArrayRecord())
        return ServerOptState(m=params.zeros_like().astype(np.float64), v=ArrayRecord())

    def update(
        self, delta: ArrayRecord, state: ServerOptState
    ) -> tuple[ArrayRecord, ServerOptState]:
        if self.momentum == 0:
            step = delta.astype(np.float64).scale(self.lr)
            return step, ServerOptState(m=state.m, v=state.v, step=state.step + 1)
        m = state.m.scale(self.momentum) + delta
        return m.scale(self.lr), ServerOptState(m=m, v=state.v, step=state.step + 1)

    def apply(
        self,
        params: ArrayRecord,
        delta: ArrayRecord,
        state: ServerOptState,
        *,
        consume: bool = False,
    ) -> tuple[ArrayRecord, ServerOptState]:
        """As :meth:`ServerOptimizer.apply`; with ``consume`` the new params are written into
        ``delta``'s own arrays where they can take them (same dtype, not shared), which the
        caller must not use afterwards: one model less at the end of a round."""
        if self.momentum != 0:
            return super().apply(params, delta, state)
        params.check_structure(delta, what="aggregated update")
        new = {
            k: sgd_step(p, delta[k], self.lr, into=_writable(p, delta[k]) if consume else None)
            for k, p in params.items()
        }
        return ArrayRecord(new, copy=False), ServerOptState(
            m=state.m, v=state.v, step=state.step + 1
        )


def _writable(param: np.ndarray, delta: np.ndarray) -> np.ndarray | None:
    """``delta``'s memory as a writeable 1-D array for the new params, or None if it cannot
    take them (another dtype, not C-contiguous, shared with ``param``, not its own)."""
    if delta.dtype != param.dtype or not delta.flags.c_contiguous:
        return None
    if np.may_share_memory(delta, param):
        return None
    if not delta.flags.writeable:
        try:
            delta.flags.writeable = True
        except ValueError:  # not its memory to write (a view of a read-only buffer)
            return None
    return delta.reshape(-1)


def sgd_step(
    param: np.ndarray, delta: np.ndarray, lr: float, *, into: np.ndarray | None = None
) -> np.ndarray:
    """``(param + lr * delta.astype(float64)).astype(param.dtype)``, block by block, into a
    new array or into ``into`` (1-D, ``param``'s size and dtype; may be ``delta``'s own memory:
    each block of ``delta`` is read before it is overwritten). The result is read-only."""
    p, d = flat(param), flat(delta)
    out = np.empty(p.size, dtype=param.dtype) if into is None else into
    buffer = np.empty(min(p.size, BLOCK), dtype=np.float64)
    for part in blocks(p.size):
        tmp = buffer[: part.stop - part.start]
        tmp[...] = d[part]
        tmp *= lr
        np.add(p[part], tmp, out=tmp)
        out[part] = tmp
        release_pages(p, part)  # mapped (a checkpoint, spilled sums): the pages leave us
        release_pages(out, part)
    out.flags.writeable = False
    return out.reshape(param.shape)


class _Adaptive(ServerOptimizer):
    """Shared shape of FedAdam, FedYogi and FedAdagrad: ``x += lr * m / (sqrt(v) + tau)``."""

    def __init__(
        self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        _check_positive(lr=lr, tau=tau)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= b < 1:
                raise ConfigError(f"server optimizer option {name} must be in [0, 1), got {b!r}")
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau

    def init(self, params: ArrayRecord) -> ServerOptState:
        zeros = params.zeros_like().astype(np.float64)
        # Reddi et al. start the second moment at tau^2 (v_{-1} >= tau^2).
        return ServerOptState(m=zeros, v=zeros.map(lambda z: z + self.tau**2))

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def update(
        self, delta: ArrayRecord, state: ServerOptState
    ) -> tuple[ArrayRecord, ServerOptState]:
        m = state.m.scale(self.beta1) + delta.scale(1 - self.beta1)
        v = state.v.zip_map(delta, lambda v_, d: self._second_moment(v_, np.square(d)))
        step = m.zip_map(v, lambda m_, v_: self.lr * m_ / (np.sqrt(v_) + self.tau))
        return step, ServerOptState(m=m, v=v, step=state.step + 1)


class Adam(_Adaptive):
    """FedAdam: ``v = beta2 * v + (1 - beta2) * delta^2``."""

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1 - self.beta2) * d2


class Yogi(_Adaptive):
    """FedYogi: ``v = v - (1 - beta2) * delta^2 * sign(v - delta^2)``."""

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return v - (1 - self.beta2) * d2 * np.sign(v - d2)


class Adagrad(_Adaptive):
    """FedAdagrad: ``v = v + delta^2`` (``beta2`` unused)."""

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return v + d2
