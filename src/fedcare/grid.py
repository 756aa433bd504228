"""The ``Grid``: the only thing server logic talks to.

A grid knows which sites are available and delivers tasks to them, yielding replies as they
arrive until every task is answered or the deadline passes. The in-memory grid (simulation)
and the coordinator-backed gRPC grid (deployment) implement it, so the one round loop in
:mod:`fedcare.strategy.loop` runs unchanged over both.

This module is interface only (no I/O) and part of the core: the round loop and analytics
import it from here, and ``fedcare.transport`` implements it (``transport/inmemory.py``, the
coordinator's grid), so the core imports no transport module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from fedcare.errors import ConfigError
from fedcare.records.messages import Reply, Task

__all__ = ["Grid", "Quorum", "Split"]

Split = Literal["train", "test"]


@dataclass(frozen=True)
class Quorum:
    """When a deadline-bound round may close before its deadline.

    Once ``replies`` tasks of the round have been answered without an error, the grid waits at
    most ``grace_s`` seconds more for the others, then stops yielding: the tasks still open are
    closed (a deployment expires them, so a late reply is refused and recorded, never taken
    into this round or another one).

    Parameters
    ----------
    replies:
        Successful replies after which the grace period starts (the strategy's ``min_sites``).
    grace_s:
        Seconds to wait for more replies once ``replies`` arrived.
    """

    replies: int
    grace_s: float

    def __post_init__(self) -> None:
        if isinstance(self.replies, bool) or not isinstance(self.replies, int) or self.replies < 1:
            raise ConfigError(f"quorum replies must be an integer >= 1, got {self.replies!r}")
        if not isinstance(self.grace_s, (int, float)) or not self.grace_s >= 0:
            raise ConfigError(f"quorum grace_s must be a number >= 0, got {self.grace_s!r}")


class Grid(ABC):
    """Delivers tasks to sites and collects their replies."""

    @abstractmethod
    def site_ids(self) -> list[str]:
        """The sites available now, sorted.

        Returns
        -------
        list of str
            Site identifiers that can receive tasks.
        """

    def declared_rows(self, split: Split = "train") -> dict[str, int]:
        """The rows each site declared for ``split`` of the study's dataset.

        Sites declare their row counts when they join (``num_train``/``num_test`` at Hello in
        deployment; the in-memory grid is given its sites' data sizes). The round loop rejects,
        for that site only, a reply that claims more rows than its site declared (a fit
        weight, an evaluation ``n``, a statistics count). The default knows no site: no cap.

        Parameters
        ----------
        split:
            ``"train"`` (fit weights, statistics counts) or ``"test"`` (evaluation ``n``).

        Returns
        -------
        dict
            ``{site_id: rows}`` for the sites that declared them.
        """
        return {}

    @abstractmethod
    def send_and_receive(
        self,
        tasks: Sequence[Task],
        *,
        timeout: float | None = None,
        quorum: Quorum | None = None,
    ) -> Iterator[Reply]:
        """Deliver ``tasks`` and yield their replies as they arrive.

        Parameters
        ----------
        tasks:
            At most one task per site.
        timeout:
            Seconds to wait for replies; ``None`` waits for all. Tasks unanswered by then
            yield nothing (the caller sees fewer replies).
        quorum:
            Close early: once ``quorum.replies`` successful replies arrived, wait at most
            ``quorum.grace_s`` more (:class:`Quorum`). ``None``: wait for all or the timeout.

        Returns
        -------
        Iterator[Reply]
            Replies, each answering one task, in arrival order. A site that failed yields an
            error reply, not an exception.

        Raises
        ------
        TransportError
            If the grid itself cannot work (not for a single site's failure).
        """

    # Asynchronous rounds (FedBuff, :mod:`fedcare.strategy.fedbuff`): tasks are submitted
    # without waiting, and replies to any submitted task are taken as they arrive, while other
    # sites still train. A grid that cannot run them keeps these defaults, which refuse.

    def submit(self, tasks: Sequence[Task]) -> None:
        """Deliver ``tasks`` without waiting for their replies (at most one open per site).

        Their replies come from :meth:`arrivals`. A task's ``round`` is the model version it
        carries, so a reply's ``round`` says which version its update was computed from.

        Raises
        ------
        ConfigError
            If this grid cannot run asynchronous rounds.
        TransportError
            If the grid itself cannot work.
        """
        raise ConfigError(f"{type(self).__name__} cannot run asynchronous rounds (submit)")

    def arrivals(
        self, *, limit: int | None = None, timeout: float | None = None
    ) -> Iterator[Reply]:
        """Replies to submitted tasks as they arrive, each once.

        Stops after ``limit`` replies, when ``timeout`` seconds passed, or when no submitted
        task is open. A site that failed yields an error reply, not an exception.

        Raises
        ------
        ConfigError
            If this grid cannot run asynchronous rounds.
        """
        raise ConfigError(f"{type(self).__name__} cannot run asynchronous rounds (arrivals)")

    def open_tasks(self) -> list[Task]:
        """The submitted tasks not yet answered, in site order."""
        return []

    def unstepped(self) -> list[Reply]:
        """Replies to submitted tasks that an earlier run of the study received but took into
        no step (a coordinator restart cut it), in arrival order: an asynchronous study
        buffers them again instead of asking their sites again. A step's record names the
        replies it took (each contribution's ``task``: :attr:`Reply.task_id`), and those are
        not returned. The default (a grid that keeps nothing across runs): none."""
        return []

    def cancel_open(self) -> list[Task]:
        """Close every open submitted task (the study ended): a reply that comes later is
        dropped (a deployment records and refuses it) and never taken by :meth:`arrivals`.

        Returns
        -------
        list of Task
            The tasks closed.
        """
        return []
