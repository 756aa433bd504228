"""What the site agent says while it cannot reach its coordinator, without flooding its log.

The first failure with a cause is logged in full ("cannot reach the coordinator: CAUSE;
retrying in N s"); the same cause again is logged only at its 2nd, 4th, 8th, 16th, … time in
a row, or when ``quiet_s`` seconds passed since it was last logged ("still failing: CAUSE
(attempt 7, next try in 30 s)"). A new cause is logged at once, and
:meth:`FailureLog.connected` says how many attempts failed once a connection works again.
:class:`Backoff` says how long to wait before the next try.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "FailureLog"]


@dataclass
class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**n))``."""

    base: float = 0.25
    cap: float = 10.0
    attempt: int = 0

    def next_delay(self, rng: random.Random) -> float:
        delay = rng.uniform(0, min(self.cap, self.base * 2**self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class FailureLog:
    """Decides which connection failures the agent logs. Not thread-safe (the agent's loop)."""

    def __init__(self, *, quiet_s: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.quiet_s = quiet_s
        self._clock = clock
        self._message = ""
        self._attempt = 0
        self._repeats = 0  # failures in a row with this message
        self._logged_at = 0.0

    @property
    def attempt(self) -> int:
        """Failed attempts in a row (0 once connected)."""
        return self._attempt

    def failed(self, message: str, delay: float, *, lost: bool = False) -> str | None:
        """The line to log for one more failure with ``message`` before a ``delay`` s wait,
        or None when it is a repeat that is not due. ``lost``: a working session dropped."""
        self._attempt += 1
        now = self._clock()
        wait = f"{delay:.1f} s" if delay < 10 else f"{delay:.0f} s"
        if message != self._message:
            self._message, self._logged_at, self._repeats = message, now, 1
            lead = "connection lost" if lost else "cannot reach the coordinator"
            return f"{lead}: {message}; retrying in {wait}"
        self._repeats += 1
        power_of_two = self._repeats & (self._repeats - 1) == 0
        if not power_of_two and now - self._logged_at < self.quiet_s:
            return None
        self._logged_at = now
        return f"still failing: {message} (attempt {self._attempt}, next try in {wait})"

    def connected(self) -> str | None:
        """Forget the failures; a line saying how many there were, if any."""
        attempts, self._attempt, self._message = self._attempt, 0, ""
        if not attempts:
            return None
        return f"reconnected after {attempts} failed attempt{'s' if attempts > 1 else ''}"
