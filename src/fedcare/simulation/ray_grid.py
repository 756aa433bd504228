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
in-memory grid's. A reply that arrived waits in Ray's object store until it is read (Ray spills
it to disk when the store is full). As on the other grids: a handler that raises gives an error
reply naming the exception; an actor that dies gives each of its unanswered tasks a
``worker-died`` error reply naming the site, and its sites answer ``worker-died`` from then on;
tasks unanswered at the timeout get no reply and their late replies are never yielded by a
later call. A :class:`~fedcare.grid.Quorum` closes a call early, and :meth:`RayGrid.submit` /
:meth:`RayGrid.arrivals` run asynchronous rounds. Actors' own output goes to Ray's session logs,
not to this process.
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from fedcare.data.base import SiteData
from fedcare.errors import ConfigError, TransportError
from fedcare.grid import Grid, Quorum, Split
from fedcare.records.messages import Reply, Task
from fedcare.simulation.parallel import check_workers
from fedcare.simulation.ray_actors import SiteActor, connect, import_ray
from fedcare.site.app import Mod

__all__ = ["RayGrid"]

#: Seconds to wait for every actor to be placed and to build its sites.
START_S = 120.0


def _resource(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{name} per Ray actor must be a number >= 0, got {value!r}")
    return float(value)


class _Actors:
    """The Ray actors of a grid and its subsets, and the Ray session they run in."""

    def __init__(
        self,
        sites: Sequence[SiteData],
        actors: int | None,
        options: Mapping[str, Any],
        resources: tuple[float, float],
        address: str | None,
    ) -> None:
        self.ray = ray = import_ray()
        num_cpus, num_gpus = resources
        ordered = sorted(sites, key=lambda s: s.site_id)
        wanted = len(ordered) if actors is None else min(actors, len(ordered))
        self.started = connect(ray, address, wanted * num_cpus)
        self.closed = False
        self.handles: list[Any] = []
        self.dead: dict[int, str] = {}  # actor -> why it is gone
        try:
            n = self._count(actors, num_cpus, len(ordered))
            self.owner = {s.site_id: i % n for i, s in enumerate(ordered)}
            torch = sys.modules.get("torch")  # a torch model's sums depend on its thread count
            threads = torch.get_num_threads() if torch is not None else None
            remote = ray.remote(SiteActor).options(num_cpus=num_cpus, num_gpus=num_gpus)
            for a in range(n):
                mine = [s for s in ordered if self.owner[s.site_id] == a]
                own = {s.site_id: tuple(options["mods"].get(s.site_id, ())) for s in mine}
                args = (own, options["feature_names"], options["site_reports"], threads)
                try:
                    self.handles.append(remote.remote(a, mine, *args))
                except (TypeError, ValueError, pickle.PicklingError) as err:
                    raise ConfigError(
                        f"the sites {[s.site_id for s in mine]} or their mods cannot be sent "
                        f"to a Ray actor: {err}"
                    ) from None
            self._await_placement(num_cpus, num_gpus)
        except BaseException:
            self.close()
            raise

    def _count(self, actors: int | None, num_cpus: float, sites: int) -> int:
        if actors is not None:
            return min(actors, sites)
        cpus = float(self.ray.cluster_resources().get("CPU", 1.0))  # one actor per CPU
        per = cpus // num_cpus if num_cpus > 0 else cpus
        return max(1, min(sites, int(per)))

    def _await_placement(self, num_cpus: float, num_gpus: float) -> None:
        refs = [h.ready.remote() for h in self.handles]
        done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=START_S)
        if len(done) < len(refs):
            have = {k: v for k, v in self.ray.cluster_resources().items() if k in ("CPU", "GPU")}
            raise ConfigError(
                f"Ray placed {len(done)} of {len(refs)} site actors within {START_S:g} s; each "
                f"asks for num_cpus={num_cpus:g}, num_gpus={num_gpus:g} and the cluster has "
                f"{have}: use fewer actors or smaller resources"
            )

    def send(self, task: Task) -> Any:
        """Start ``task`` in its site's actor; its object ref."""
        return self.handles[self.owner[task.site_id]].call.remote(task)

    def result(self, task: Task, ref: Any) -> Reply:
        """The reply ``ref`` holds (its object is ready): an error reply if the actor died."""
        errors = self.ray.exceptions
        a = self.owner[task.site_id]
        try:
            reply: Reply = self.ray.get(ref)
            return reply
        except errors.RayActorError as err:
            self.dead.setdefault(a, f"Ray actor {a} died ({type(err).__name__})")
            msg = f"site {task.site_id!r}: {self.dead[a]} before it replied"
            return Reply.failure(task, "worker-died", msg)
        except errors.RayError as err:  # e.g. a reply Ray could not serialize
            first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            return Reply.failure(task, "exception", f"reply could not be sent: {first}")

    def close(self) -> None:
        """Stop every actor, and Ray itself when this grid started it."""
        if self.closed:
            return
        self.closed = True
        for handle in self.handles:
            self.ray.kill(handle)
        if self.started:
            self.ray.shutdown()


class RayGrid(Grid):
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
        resources = (_resource("num_cpus", num_cpus), _resource("num_gpus", num_gpus))
        if not sites:
            raise ConfigError("a Ray grid needs at least one site")
        options = {
            "mods": dict(mods or {}),
            "feature_names": tuple(feature_names),
            "site_reports": site_reports,
        }
        self._sites = sorted(s.site_id for s in sites)
        self._rows: dict[Split, dict[str, int]] = {
            "train": {s.site_id: len(s.train) for s in sites},
            "test": {s.site_id: len(s.test) for s in sites},
        }
        self._record, self._owns = record, True
        self._pool = _Actors(sites, actors, options, resources, address)
        self.actors = len(self._pool.handles)
        self._open: dict[str, tuple[Task, Any]] = {}  # submitted, unanswered: site -> task, ref
        self._refused: list[Reply] = []  # submitted tasks answered at once (unknown site...)
        #: Every task and reply that crossed the grid when ``record`` is set (tests read the wire).
        self.wire: list[Task | Reply] = []

    def site_ids(self) -> list[str]:
        return list(self._sites)

    def declared_rows(self, split: Split = "train") -> dict[str, int]:
        return dict(self._rows.get(split, {}))

    def subset(self, site_ids: Sequence[str]) -> RayGrid:
        """A grid over some of this grid's sites, in the same actors (their state included);
        closing it leaves the actors running."""
        missing = [s for s in site_ids if s not in self._sites]
        if missing:
            raise TransportError(f"unknown sites {missing}; known: {self.site_ids()}")
        view = object.__new__(RayGrid)
        view._sites = sorted(site_ids)
        view._rows = {
            split: {s: n for s, n in r.items() if s in site_ids} for split, r in self._rows.items()
        }
        view._record, view._owns, view._pool = self._record, False, self._pool
        view.actors, view._open, view._refused, view.wire = self.actors, {}, [], []
        return view

    def _start(self, task: Task) -> Any | Reply:
        """Send ``task`` to its actor: its object ref, or the error reply that answers it now."""
        if self._record:
            self.wire.append(task)
        if task.site_id not in self._sites:
            return Reply.failure(task, "unknown-site", f"no site {task.site_id!r} on this grid")
        why = self._pool.dead.get(self._pool.owner[task.site_id])
        if why is not None:
            return Reply.failure(task, "worker-died", f"site {task.site_id!r}: {why}")
        return self._pool.send(task)

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
        pending: dict[Any, Task] = {}
        refused: list[Reply] = []
        for task in list(tasks):
            started = self._start(task)
            if isinstance(started, Reply):
                refused.append(started)
            else:
                pending[started] = task
        return self._collect(refused, pending, deadline, quorum)

    def _collect(
        self,
        refused: list[Reply],
        pending: dict[Any, Task],
        deadline: float | None,
        quorum: Quorum | None,
    ) -> Iterator[Reply]:
        ok = 0
        for reply in refused:
            yield self._out(reply)
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = self._pool.ray.wait(list(pending), num_returns=1, timeout=left)
            if not ready:
                return  # unanswered tasks get no reply; their refs are dropped with pending
            for ref in ready:
                reply = self._pool.result(pending.pop(ref), ref)
                ok += reply.error is None
                if quorum is not None and ok == quorum.replies:
                    grace = time.monotonic() + quorum.grace_s
                    deadline = grace if deadline is None else min(deadline, grace)
                yield self._out(reply)
                del reply

    def submit(self, tasks: Sequence[Task]) -> None:
        self._check_open()
        sites = [t.site_id for t in tasks]
        twice = sorted({s for s in sites if s in self._open or sites.count(s) > 1})
        if twice:
            raise ConfigError(f"sites {twice} would have more than one open task")
        for task in list(tasks):
            started = self._start(task)
            if isinstance(started, Reply):
                self._refused.append(started)
            else:
                self._open[task.site_id] = (task, started)

    def arrivals(
        self, *, limit: int | None = None, timeout: float | None = None
    ) -> Iterator[Reply]:
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        taken = 0
        while limit is None or taken < limit:
            if self._refused:
                reply = self._refused.pop(0)
            elif not self._open:
                return
            else:
                refs = {ref: site for site, (_, ref) in self._open.items()}
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _ = self._pool.ray.wait(list(refs), num_returns=1, timeout=left)
                if not ready:
                    return
                task, ref = self._open.pop(refs[ready[0]])
                reply = self._pool.result(task, ref)
            taken += 1
            yield self._out(reply)

    def open_tasks(self) -> list[Task]:
        return [self._open[s][0] for s in sorted(self._open)]

    def cancel_open(self) -> list[Task]:
        closed = self.open_tasks()
        self._open.clear()  # their refs are dropped: a reply that comes later is never taken
        return closed

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
