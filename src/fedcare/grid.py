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
from typing import Literal

from fedcare.records.messages import Reply, Task

__all__ = ["Grid", "Split"]

Split = Literal["train", "test"]


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
        self, tasks: Sequence[Task], *, timeout: float | None = None
    ) -> Iterator[Reply]:
        """Deliver ``tasks`` and yield their replies as they arrive.

        Parameters
        ----------
        tasks:
            At most one task per site.
        timeout:
            Seconds to wait for replies; ``None`` waits for all. Tasks unanswered by then
            yield nothing (the caller sees fewer replies).

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
