"""A grid whose sites run in Ray actors: ``fedcare simulate --backend ray [--address ADDR]``.

:class:`RayGrid` runs site tasks in Ray actors, on a local Ray instance it starts (bound to
127.0.0.1, no dashboard; shut down when the grid closes) or on an existing cluster
(``address``, e.g. the head node's ``10.0.0.5:6379`` after ``ray start --head``; fedcare must be
installed on its nodes). This is how a simulated study outgrows one machine: Ray's cluster
places the actors, fedcare brings no scheduler of its own.

Sites are assigned to actors as :class:`~fedcare.simulation.parallel.ParallelGrid` assigns them
to workers (round-robin in sorted site order). An actor is sent its sites'
:class:`~fedcare.data.base.SiteData` once and builds their :class:`~fedcare.site.app.SiteApp` s
once, so datasets travel once per actor, not per task, and each site's state across rounds
(SCAFFOLD control variates, personal models, compression residuals, its privacy ledger) stays
in the actor that owns it. Each actor reserves ``num_cpus`` CPUs and ``num_gpus`` GPUs (Ray's
logical resources); a local instance the grid starts has at least as many CPUs as its actors
reserve. A torch model's results depend on torch's thread count, so each actor uses this
process's (when torch is loaded here).

Replies are yielded in arrival order (``ray.wait`` over the open tasks' object refs) and the
round loop sums them in site order, so the model is the same bit for bit as the sequential
in-memory grid's. An actor has at most a few tasks in flight (:data:`~fedcare.simulation.
ray_actors.AHEAD`): the next ones wait at the actor, so it never idles for a round trip, and
Ray's object store holds at most that many replies per actor however many sites there are
(:class:`~fedcare.simulation.ray_actors.Flow`). A call closes at its deadline (``timeout``)
or, with a :class:`~fedcare.grid.Quorum`, once ``quorum.replies`` tasks were answered without
an error and ``quorum.grace_s`` passed since: its tasks unanswered get no reply, now or later;
those not yet sent are never sent, those waiting at an actor are skipped (the actor hears
their tickets in a thread of its own), and one an actor runs ends as it would (Ray cannot
interrupt it, so no site's state is left half-updated) with its reply dropped.

As on the other grids: a handler that raises gives an error reply naming the exception; an
actor that dies gives each of its unanswered tasks a ``worker-died`` error reply naming the
site, and its sites answer ``worker-died`` from then on. :meth:`RayGrid.submit` /
:meth:`RayGrid.arrivals` run asynchronous rounds. Actors' own output goes to Ray's session
logs, not to this process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from fedcare.data.base import SiteData
from fedcare.errors import ConfigError, TransportError
from fedcare.grid import Grid, Quorum
from fedcare.records.messages import Reply, Task
from fedcare.simulation.owned_sites import OwnedSites
from fedcare.simulation.parallel import check_workers
from fedcare.simulation.ray_actors import ActorPool, Flow, check_resource
from fedcare.site.app import Mod

__all__ = ["RayGrid"]


class RayGrid(OwnedSites, Grid):
    """Sites in Ray actors (see module docstring); use it in a ``with`` block.

    Parameters
    ----------
    sites:
        The sites' data; each actor is sent its sites' data once.
    actors:
        Ray actors (at most one per site); ``None``: one per CPU of the Ray cluster (each
        reserving ``num_cpus``), up to the site count.
    address:
        An existing Ray cluster (``host:port`` or ``ray://host:port``); ``None`` starts a local
        instance on 127.0.0.1 (or uses the one this process already joined).
    num_cpus, num_gpus:
        Ray resources each actor reserves.
    record:
        Keep every task and reply that crossed the grid in ``wire``.
    mods:
        Site middleware by site id (sent to the actors with their sites).
    feature_names:
        The columns of the sites' data.
    site_reports:
        The folder under which each site writes its site-only reports (``<folder>/<site>``).

    Raises
    ------
    ConfigError
        When Ray is not installed, ``address`` cannot be reached, for ``actors`` < 1, negative
        resources, no sites, or actors the cluster cannot place.
    """

    def __init__(
        self,
        sites: Sequence[SiteData],
        *,
        actors: int | None = None,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        record: bool = False,
        mods: Mapping[str, Sequence[Mod]] | None = None,
        feature_names: Sequence[str] = (),
        site_reports: Path | None = None,
    ) -> None:
        if actors is not None:
            check_workers(actors)
        resources = (check_resource("num_cpus", num_cpus), check_resource("num_gpus", num_gpus))
        if not sites:
            raise ConfigError("a Ray grid needs at least one site")
        options = {
            "mods": dict(mods or {}),
            "feature_names": tuple(feature_names),
            "site_reports": site_reports,
        }
        self._own(sites)
        self._record, self._owns = record, True
        self._pool = ActorPool(sites, actors, options, resources, address)
        self.actors = len(self._pool.handles)
        self._open = Flow(self._pool)  # submitted tasks, not yet answered
        self._refused: list[Reply] = []  # submitted tasks answered at once (unknown site...)
        #: Every task and reply that crossed the grid when ``record`` is set (tests read the wire).
        self.wire: list[Task | Reply] = []

    def subset(self, site_ids: Sequence[str]) -> RayGrid:
        """A grid over some of this grid's sites, in the same actors (their state included);
        closing it leaves the actors running."""
        view = self._view(site_ids)
        view._record, view._owns, view._pool = self._record, False, self._pool
        view.actors, view._open, view._refused = self.actors, Flow(self._pool), []
        view.wire = []
        return view

    def _refuse(self, task: Task) -> Reply | None:
        """The error reply that answers ``task`` at once (unknown site, dead actor), if any."""
        if self._record:
            self.wire.append(task)
        if task.site_id not in self._sites:
            return Reply.failure(task, "unknown-site", f"no site {task.site_id!r} on this grid")
        why = self._pool.dead.get(self._pool.owner[task.site_id])
        if why is not None:
            return Reply.failure(task, "worker-died", f"site {task.site_id!r}: {why}")
        return None

    def _check_open(self) -> None:
        if self._pool.closed:
            raise TransportError("this Ray grid is closed; its actors are gone")

    def _out(self, reply: Reply) -> Reply:
        if self._record:
            self.wire.append(reply)
        return reply

    def send_and_receive(
        self,
        tasks: Sequence[Task],
        *,
        timeout: float | None = None,
        quorum: Quorum | None = None,
    ) -> Iterator[Reply]:
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        flow = Flow(self._pool)
        refused: list[Reply] = []
        for task in list(tasks):
            if (failure := self._refuse(task)) is not None:
                refused.append(failure)
            else:
                flow.add(task)
        return self._collect(refused, flow, deadline, quorum)

    def _collect(
        self, refused: list[Reply], flow: Flow, deadline: float | None, quorum: Quorum | None
    ) -> Iterator[Reply]:
        ok = 0
        for reply in refused:
            yield self._out(reply)
        try:
            while (got := flow.next(deadline)) is not None:
                ok += got.error is None
                if quorum is not None and ok == quorum.replies:
                    grace = time.monotonic() + quorum.grace_s
                    deadline = grace if deadline is None else min(deadline, grace)
                yield self._out(got)
                del got
        finally:  # the call closed: its tasks unanswered get no reply, now or later
            flow.cancel()

    def submit(self, tasks: Sequence[Task]) -> None:
        self._check_open()
        sites = [t.site_id for t in tasks]
        open_ = {t.site_id for t in self._open.tasks()}
        twice = sorted({s for s in sites if s in open_ or sites.count(s) > 1})
        if twice:
            raise ConfigError(f"sites {twice} would have more than one open task")
        for task in list(tasks):
            if (failure := self._refuse(task)) is not None:
                self._refused.append(failure)
            else:
                self._open.add(task)

    def arrivals(
        self, *, limit: int | None = None, timeout: float | None = None
    ) -> Iterator[Reply]:
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        taken = 0
        while limit is None or taken < limit:
            reply = self._refused.pop(0) if self._refused else self._open.next(deadline)
            if reply is None:
                return
            taken += 1
            yield self._out(reply)

    def open_tasks(self) -> list[Task]:
        return sorted(self._open.tasks(), key=lambda t: t.site_id)

    def cancel_open(self) -> list[Task]:
        return sorted(self._open.cancel(), key=lambda t: t.site_id)

    def close(self) -> None:
        """Stop the actors and the Ray instance the grid started (a subset's view leaves them
        to the grid it came from)."""
        if self._owns:
            self._pool.close()

    def __enter__(self) -> RayGrid:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
