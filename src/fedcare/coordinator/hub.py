"""In-process wake-ups between the gRPC handlers and the study runners.

The database is the source of truth; the hub only shortens waits: a runner that created tasks
wakes the site calls long-polling for work, and a stored reply wakes the runner collecting
them. Every waiter also re-checks the database after a bounded wait, so a lost wake-up costs
at most ``poll_s``. It also counts each site's Hellos (:meth:`Hub.hello`), so a study that
withholds its tasks from a site that withdrew offers them again when the site reconnects.
"""

from __future__ import annotations

import threading

__all__ = ["Hub"]


class Hub:
    """A generation counter behind a condition variable."""

    def __init__(self, poll_s: float = 0.25) -> None:
        self.poll_s = poll_s
        self._cond = threading.Condition()
        self._generation = 0
        self._hellos: dict[str, int] = {}

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def generation(self) -> int:
        with self._cond:
            return self._generation

    def wait(self, since: int, timeout: float) -> int:
        """Wait until something changed after ``since`` or ``min(timeout, poll_s)`` passed."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._generation != since, timeout=min(timeout, self.poll_s)
            )
            return self._generation

    def hello(self, site_id: str) -> None:
        """Note a Hello from ``site_id`` (it connected or reconnected)."""
        with self._cond:
            self._hellos[site_id] = self._hellos.get(site_id, 0) + 1
            self._generation += 1
            self._cond.notify_all()

    def hellos(self, site_id: str) -> int:
        """How many Hellos ``site_id`` has said to this process."""
        with self._cond:
            return self._hellos.get(site_id, 0)
