"""Pure accounting math: epsilon of a sequence of DP events, by the libraries' accountants.

An event is the (Poisson-)sampled Gaussian mechanism with noise multiplier ``z`` (noise std
divided by sensitivity), sampling probability ``q`` and a repetition ``count``: one round of
central DP is ``DpEvent(z, 1.0, 1)``; a site's DP-SGD round is ``DpEvent(z, batch / n,
steps)``. Events are JSON-able (:meth:`DpEvent.to_dict`), which is how aggregation layers
report them in their measurements (``dp_event``).

Nothing here re-implements the analysis: :func:`rdp_epsilon` and :func:`pld_epsilon` hand the
events to dp-accounting's ``RdpAccountant`` and ``PLDAccountant`` (add-or-remove-one
neighbouring), and :func:`fedcare.privacy.torch.opacus_rdp_epsilon` to Opacus's RDP
analysis, so epsilon matches those libraries for the same events by construction (the tests
check it, and a published value).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedcare.errors import ConfigError, ValidationError

if TYPE_CHECKING:  # dp_accounting (with scipy.signal) takes ~1 s to import: load it on use
    import dp_accounting

__all__ = [
    "EVENT_KIND",
    "DpEvent",
    "event_from_dict",
    "noise_multiplier_for_epsilon",
    "pld_epsilon",
    "rdp_curve",
    "rdp_epsilon",
]

EVENT_KIND = "sampled_gaussian"
#: dp-accounting's default RDP orders.
DEFAULT_ORDERS: tuple[float, ...] = (
    *(1.0 + x / 10.0 for x in range(1, 100)),
    *(float(a) for a in range(11, 64)),
    128.0,
    256.0,
    512.0,
    1024.0,
)  # dp_accounting.rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS (a test checks they agree)
#: The integer orders among them: calibration searches with these, which is fast (fractional
#: orders of a large-noise sampled Gaussian take seconds each) and conservative (fewer orders
#: can only give a larger epsilon, so the full accountant reports at most the target).
CALIBRATION_ORDERS: tuple[float, ...] = tuple(a for a in DEFAULT_ORDERS if a == int(a))
_EVENT_KEYS = ("kind", "noise_multiplier", "sampling_probability", "count")


@dataclass(frozen=True)
class DpEvent:
    """``count`` repetitions of the Gaussian mechanism with Poisson sampling probability ``q``.

    Raises
    ------
    ConfigError
        For a negative or non-finite noise multiplier, ``q`` outside (0, 1] or ``count < 1``.
    """

    noise_multiplier: float
    sampling_probability: float = 1.0
    count: int = 1

    def __post_init__(self) -> None:
        z, q, k = self.noise_multiplier, self.sampling_probability, self.count
        if isinstance(z, bool) or not isinstance(z, int | float) or not 0 <= z < math.inf:
            raise ConfigError(f"dp event noise_multiplier must be a finite number >= 0, got {z!r}")
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0 < q <= 1:
            raise ConfigError(f"dp event sampling_probability must be in (0, 1], got {q!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"dp event count must be an integer >= 1, got {k!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form reported in measurements and saved in accountant state."""
        return {
            "kind": EVENT_KIND,
            "noise_multiplier": float(self.noise_multiplier),
            "sampling_probability": float(self.sampling_probability),
            "count": int(self.count),
        }

    def library_event(self) -> dp_accounting.DpEvent:
        import dp_accounting

        """The same event as a dp-accounting ``DpEvent``."""
        gaussian: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        if self.sampling_probability < 1:
            gaussian = dp_accounting.PoissonSampledDpEvent(self.sampling_probability, gaussian)
        if self.count == 1:
            return gaussian
        return dp_accounting.SelfComposedDpEvent(gaussian, self.count)


def event_from_dict(data: Any, *, what: str = "dp event") -> DpEvent:
    """Parse :meth:`DpEvent.to_dict` output; errors name ``what`` and the bad key.

    Raises
    ------
    ValidationError
        For a non-mapping, an unknown kind, a missing or unknown key, or a bad value.
    """
    if not isinstance(data, Mapping):
        raise ValidationError(f"{what}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_EVENT_KEYS))
    if unknown:
        raise ValidationError(f"{what}: unknown key(s) {unknown}; expected {list(_EVENT_KEYS)}")
    for key in _EVENT_KEYS:
        if key not in data:
            raise ValidationError(f"{what}: missing key {key!r}")
    if data["kind"] != EVENT_KIND:
        raise ValidationError(f"{what}: key 'kind' is {data['kind']!r}, expected {EVENT_KIND!r}")
    try:
        return DpEvent(data["noise_multiplier"], data["sampling_probability"], data["count"])
    except ConfigError as err:
        raise ValidationError(f"{what}: {err}") from None


def _check_delta(delta: float) -> float:
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    return float(delta)


def _compose(accountant: Any, events: Iterable[DpEvent]) -> bool:
    """Compose ``events`` into a dp-accounting accountant; False if one has no noise."""
    for event in events:
        if event.noise_multiplier == 0:
            return False
        accountant.compose(event.library_event())
    return True


def rdp_curve(event: DpEvent, orders: Sequence[float] | None = None) -> np.ndarray:
    """RDP of ``event`` at each order (dp-accounting's ``RdpAccountant``; cached per step).

    The per-step curve of a ``(z, q)`` pair is computed once and scaled by ``count``: RDP
    composes additively, which is what the library does inside ``compose`` too. Orders
    default to dp-accounting's ``DEFAULT_RDP_ORDERS``.
    """
    key = tuple(orders) if orders is not None else DEFAULT_ORDERS
    step = DpEvent(event.noise_multiplier, event.sampling_probability, 1)
    return event.count * _step_curve(step, key)


@functools.lru_cache(maxsize=256)
def _step_curve(step: DpEvent, orders: tuple[float, ...]) -> np.ndarray:
    import dp_accounting.rdp

    accountant = dp_accounting.rdp.RdpAccountant(
        list(orders), dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    with _quiet_absl():
        accountant.compose(step.library_event())
    # dp-accounting has no getter for the curve; the tests check epsilon against its own
    # get_epsilon for the same events, so a change there fails loudly.
    curve = np.array(accountant._rdp, dtype=np.float64)
    curve.setflags(write=False)
    return curve


def rdp_epsilon(
    events: Iterable[DpEvent], delta: float, *, orders: Sequence[float] | None = None
) -> float:
    """Epsilon of ``events`` at ``delta`` by dp-accounting's RDP analysis.

    Equal to ``RdpAccountant(orders).compose(...)`` then ``get_epsilon(delta)`` for the same
    events; 0 for no events; ``inf`` when an event has no noise.
    """
    delta = _check_delta(delta)
    key = list(orders) if orders is not None else list(DEFAULT_ORDERS)
    total = np.zeros(len(key))
    for event in events:
        if event.noise_multiplier == 0:
            return math.inf
        total = total + rdp_curve(event, key)
    if not total.any():
        return 0.0
    from dp_accounting.rdp import rdp_privacy_accountant as rdp_analysis

    eps, _ = rdp_analysis.compute_epsilon(key, total, delta)
    return float(eps)


def pld_epsilon(
    events: Iterable[DpEvent], delta: float, *, value_discretization_interval: float = 1e-4
) -> float:
    """Epsilon of ``events`` at ``delta`` by dp-accounting's PLD accountant (tighter than RDP).

    0 for no events; ``inf`` when an event has no noise.
    """
    delta = _check_delta(delta)
    import dp_accounting.pld

    accountant = dp_accounting.pld.PLDAccountant(
        dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
        value_discretization_interval=value_discretization_interval,
    )
    if not _compose(accountant, events):
        return math.inf
    return float(accountant.get_epsilon(delta))


def noise_multiplier_for_epsilon(
    target_epsilon: float, delta: float, *, sampling_probability: float = 1.0, count: int = 1
) -> float:
    """The smallest noise multiplier whose ``count`` sampled-Gaussian steps stay within
    ``(target_epsilon, delta)`` by the RDP accountant (dp-accounting's calibration, over
    :data:`CALIBRATION_ORDERS`).

    Raises
    ------
    ConfigError
        For a non-positive target or a bad delta, ``q`` or ``count`` (named).
    """
    if isinstance(target_epsilon, bool) or not 0 < target_epsilon < math.inf:
        raise ConfigError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    delta = _check_delta(delta)
    DpEvent(1.0, sampling_probability, count)  # validates q and count, naming them
    import dp_accounting.rdp

    def make_event(z: float) -> dp_accounting.DpEvent:
        return DpEvent(z, sampling_probability, count).library_event()

    with _quiet_absl():  # tiny trial multipliers make some fractional orders warn
        z = dp_accounting.calibrate_dp_mechanism(
            lambda: dp_accounting.rdp.RdpAccountant(
                CALIBRATION_ORDERS, dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
            ),
            make_event,
            target_epsilon,
            delta,
            dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
        )
    return float(z)


@contextmanager
def _quiet_absl() -> Iterator[None]:
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
