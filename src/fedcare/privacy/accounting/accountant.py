"""A small stateful accountant: records DP events, answers epsilon, saves and restores itself.

The coordinator (or a site) feeds it the ``dp_event`` measurements of each round::

    acc = Accountant("rdp")
    acc = acc.record(DpEvent(noise_multiplier=1.0))   # a new accountant; the old is unchanged
    acc.epsilon(1e-5)
    Accountant.from_state(acc.to_state())             # round-trips, validating every key
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedcare.errors import ConfigError, ValidationError
from fedcare.privacy.accounting.analysis import DpEvent, event_from_dict
from fedcare.privacy.accounting.registry import accountant_names, epsilon_of

__all__ = ["STATE_VERSION", "Accountant", "create_accountant"]

STATE_VERSION = 1
_STATE_KEYS = ("version", "method", "events")


@dataclass(frozen=True)
class Accountant:
    """The events recorded so far and the method (registry name) that turns them into epsilon.

    Immutable: :meth:`record` returns a new accountant, as aggregation layers return new state.
    """

    method: str = "rdp"
    events: tuple[DpEvent, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.method not in accountant_names():
            raise ValidationError(
                f"accountant method {self.method!r} is unknown; choose one of {accountant_names()}"
            )

    def record(self, event: DpEvent | Mapping[str, Any]) -> Accountant:
        """A new accountant with ``event`` (a :class:`DpEvent` or its dict form) appended."""
        if not isinstance(event, DpEvent):
            event = event_from_dict(event)
        return Accountant(self.method, (*self.events, event))

    def record_all(self, events: Iterable[DpEvent | Mapping[str, Any]]) -> Accountant:
        """A new accountant with every event of ``events`` appended, in order."""
        acc = self
        for event in events:
            acc = acc.record(event)
        return acc

    def epsilon(self, delta: float) -> float:
        """Epsilon of all recorded events at ``delta`` (0 when nothing was recorded)."""
        return epsilon_of(self.events, delta, method=self.method)

    def to_state(self) -> dict[str, Any]:
        """A JSON-able state that :meth:`from_state` restores."""
        return {
            "version": STATE_VERSION,
            "method": self.method,
            "events": [e.to_dict() for e in self.events],
        }

    @classmethod
    def from_state(cls, state: Any) -> Accountant:
        """Restore :meth:`to_state` output.

        Raises
        ------
        ValidationError
            Naming the bad key: a missing or unknown key, another version, an unknown
            method or a malformed event (``events[i].key``).
        """
        if not isinstance(state, Mapping):
            raise ValidationError(
                f"accountant state: expected a mapping, got {type(state).__name__}"
            )
        unknown = sorted(set(state) - set(_STATE_KEYS))
        if unknown:
            raise ValidationError(f"accountant state: unknown key(s) {unknown}")
        for key in _STATE_KEYS:
            if key not in state:
                raise ValidationError(f"accountant state: missing key {key!r}")
        if state["version"] != STATE_VERSION:
            raise ValidationError(
                f"accountant state: key 'version' is {state['version']!r}, "
                f"this fedcare reads version {STATE_VERSION}"
            )
        if not isinstance(state["events"], list):
            raise ValidationError("accountant state: key 'events' must be a list")
        events = tuple(
            event_from_dict(e, what=f"accountant state: events[{i}]")
            for i, e in enumerate(state["events"])
        )
        method = state["method"]
        if method not in accountant_names():
            raise ValidationError(
                f"accountant state: key 'method' is {method!r}; known: {accountant_names()}"
            )
        return cls(method, events)


def create_accountant(method: str = "rdp") -> Accountant:
    """An empty :class:`Accountant` using ``method``.

    Raises
    ------
    ConfigError
        For an unknown method.
    """
    if method not in accountant_names():
        raise ConfigError(f"unknown accountant {method!r}; choose one of {accountant_names()}")
    return Accountant(method)
