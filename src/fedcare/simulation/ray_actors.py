"""Ray for :class:`~fedcare.simulation.ray_grid.RayGrid`: the connection to a Ray instance, the
site actors that run in it, and the flow of tasks through them.

Ray is an optional extra, imported only when a Ray grid opens; the connection to an instance
is :mod:`fedcare.simulation.ray_connect`. :class:`SiteActor` is the body of one actor: it
builds its sites' :class:`~fedcare.site.app.SiteApp` s once and answers their tasks one at a
time.
:class:`ActorPool` starts a grid's actors and reads their replies; a :class:`Flow` sends a
call's tasks through them, a few at a time per actor.
"""

from __future__ import annotations

import dataclasses
import itertools
import pickle
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcare.data.base import SiteData
from fedcare.errors import ConfigError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.simulation.parallel_worker import call_site
from fedcare.simulation.ray_connect import connect, import_ray
from fedcare.site.app import Mod, SiteApp

__all__ = ["ActorPool", "Flow", "SiteActor", "check_resource"]

#: Seconds to wait for every actor to be placed and to build its sites.
START_S = 120.0
#: Tasks in flight per actor: the one it works on and the next ones, waiting at the actor, so it
#: never idles for the round trip between a reply and its next task (which took longer than a
#: 1M-parameter site's work). A task closed before its actor started it is skipped: the actor
#: is told its ticket (:meth:`SiteActor.close`), in a thread of its own, and never runs it.
AHEAD = 3
#: The actor's concurrency group for :meth:`SiteActor.close`: its own thread, so a close is
#: heard while the actor's one task thread works; tasks run one at a time, in order.
CONTROL = "control"


class SiteActor:
    """One Ray actor's sites (run as ``ray.remote(SiteActor)``; see the module docstring).

    Parameters
    ----------
    index:
        The actor's number (named in error replies).
    sites:
        Its sites' data, sent once.
    mods, feature_names, site_reports:
        As :class:`~fedcare.simulation.parallel.ParallelGrid` takes them.
    torch_threads:
        Torch's thread count in the coordinator's process when torch is loaded there (a torch
        model's sums depend on it), else ``None``.
    """

    def __init__(
        self,
        index: int,
        sites: Sequence[SiteData],
        mods: Mapping[str, Sequence[Mod]],
        feature_names: tuple[str, ...],
        site_reports: Path | None,
        torch_threads: int | None,
    ) -> None:
        self.index = index
        self.apps: dict[str, SiteApp] = {}
        self.broken: str | None = None
        self.closed: set[int] = set()  # tickets of tasks closed before they ran
        self.lock = threading.Lock()
        try:
            if torch_threads is not None:
                from fedcare.models.torch_runtime import import_torch

                import_torch().set_num_threads(torch_threads)
            for site in sites:
                app = SiteApp(site, mods=mods.get(site.site_id, ()), simulated=True)
                app.runtime.feature_names = feature_names
                if site_reports is not None:
                    app.runtime.report_dir = site_reports / site.site_id
                self.apps[site.site_id] = app
        except Exception as err:  # its replies name why this actor has no sites
            self.broken = traceback.format_exception_only(type(err), err)[-1].strip()

    def ready(self) -> str | None:
        """``None`` once its sites are built, else why they could not be."""
        return self.broken

    def close(self, tickets: Sequence[int]) -> None:
        """Skip the tasks of ``tickets`` not started yet (their call closed). Runs in the
        actor's :data:`CONTROL` thread, so it takes effect while a task is running."""
        with self.lock:
            self.closed.update(tickets)

    def call(self, ticket: int, task: Task, params: ArrayRecord | None = None) -> Reply | None:
        """The reply of ``task``'s site (an error reply when the site raised), or ``None`` when
        its ``ticket`` was closed before it started; ``params``: the task's model when it came
        apart from the task (:meth:`ActorPool.send`)."""
        with self.lock:  # tickets run in order: a closed one below this one already ran
            skip = ticket in self.closed
            self.closed = {t for t in self.closed if t > ticket}
        if skip:
            return None
        if params is not None:
            task = dataclasses.replace(task, params=params)
        if self.broken is not None:
            why = f"Ray actor {self.index} failed to start its sites: {self.broken}"
            return Reply.failure(task, "worker-died", f"site {task.site_id!r}: {why}")
        return call_site(self.apps[task.site_id], task)


def check_resource(name: str, value: object) -> float:
    """``value`` as an amount of the Ray resource ``name`` each actor reserves (>= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{name} per Ray actor must be a number >= 0, got {value!r}")
    return float(value)


class ActorPool:
    """The Ray actors of a grid and its subsets, and the Ray session they run in.

    It joins Ray (:func:`connect`), starts ``actors`` :class:`SiteActor` s (``None``: one per
    CPU of the cluster, up to the site count) each reserving ``resources`` (CPUs, GPUs), gives
    them their sites round-robin in sorted site order, and waits until every actor built its
    sites. ``options``: the ``mods``, ``feature_names`` and ``site_reports`` of the grid.

    Raises
    ------
    ConfigError
        When the sites or mods cannot be sent to an actor, or Ray cannot place the actors.
    """

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
        wanted = 0 if actors is None else min(actors, len(ordered))  # None: one per CPU
        self.started = connect(ray, address, wanted * num_cpus)
        self.closed = False
        self.handles: list[Any] = []
        self.dead: dict[int, str] = {}  # actor -> why it is gone
        self.shared: tuple[ArrayRecord, Any] | None = None  # the model in the object store
        self.tickets = itertools.count(1)  # each task sent gets one
        try:
            n = self._count(actors, num_cpus, len(ordered))
            self.owner = {s.site_id: i % n for i, s in enumerate(ordered)}
            torch = sys.modules.get("torch")  # a torch model's sums depend on its thread count
            threads = torch.get_num_threads() if torch is not None else None
            remote = ray.remote(concurrency_groups={CONTROL: 1})(SiteActor)
            remote = remote.options(num_cpus=num_cpus, num_gpus=num_gpus)
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

    def send(self, task: Task, ticket: int) -> Any:
        """Start ``task`` (numbered ``ticket``) in its site's actor; its object ref.

        A round's tasks carry the same global model: it is put in Ray's object store once
        (while tasks carry that very record) and each actor reads it from there, rather than
        every task carrying a serialized copy.
        """
        handle = self.handles[self.owner[task.site_id]]
        if not len(task.params):
            return handle.call.remote(ticket, task)
        if self.shared is None or self.shared[0] is not task.params:
            self.shared = (task.params, self.ray.put(task.params))
        light = dataclasses.replace(task, params=ArrayRecord())
        return handle.call.remote(ticket, light, self.shared[1])

    def close_tickets(self, actor: int, tickets: Sequence[int]) -> None:
        """Tell ``actor`` to skip ``tickets`` it has not started (no reply is awaited)."""
        if tickets and actor not in self.dead:
            self.handles[actor].close.options(concurrency_group=CONTROL).remote(list(tickets))

    def result(self, task: Task, ref: Any) -> Reply:
        """The reply ``ref`` holds (its object is ready): an error reply if the actor died."""
        errors = self.ray.exceptions
        a = self.owner[task.site_id]
        try:
            reply: Reply | None = self.ray.get(ref)
            if reply is None:  # closed before it ran: only a closed task's ref holds this
                return Reply.failure(task, "exception", "the task was closed before it ran")
            return reply
        except errors.RayActorError as err:
            lines = str(err).strip().splitlines() or [type(err).__name__]
            self.dead.setdefault(a, f"Ray actor {a} died ({lines[0][:200]})")
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
        self.shared = None
        for handle in self.handles:
            self.ray.kill(handle)
        if self.started:
            self.ray.shutdown()


class Flow:
    """Tasks on their way through a pool's actors, at most :data:`AHEAD` in flight per actor.

    An actor answers its tasks one at a time and Ray keeps each answer in its object store
    until it is read; sending an actor its next task only when its reply was read bounds the
    replies held to ``AHEAD`` per actor, not one per site. When the caller stops waiting,
    :meth:`cancel` closes the tasks not yet answered.
    """

    def __init__(self, pool: ActorPool) -> None:
        self.pool = pool
        self.backlog: dict[int, deque[Task]] = {}
        self.flying: dict[Any, tuple[Task, int]] = {}  # object ref -> task, ticket
        self.busy: dict[int, int] = {}  # actor -> tasks in flight

    def add(self, task: Task) -> None:
        """Queue ``task`` for its site's actor (sent at once if the actor has room)."""
        a = self.pool.owner[task.site_id]
        self.backlog.setdefault(a, deque()).append(task)
        self._fill(a)

    def _fill(self, a: int) -> None:
        queue = self.backlog.get(a)
        while queue and self.busy.get(a, 0) < AHEAD:
            task, ticket = queue.popleft(), next(self.pool.tickets)
            self.flying[self.pool.send(task, ticket)] = (task, ticket)
            self.busy[a] = self.busy.get(a, 0) + 1

    def tasks(self) -> list[Task]:
        """The tasks sent or queued, not yet answered."""
        sent = [task for task, _ in self.flying.values()]
        return [*sent, *(t for q in self.backlog.values() for t in q)]

    def cancel(self) -> list[Task]:
        """Close every task not yet answered (the caller stopped waiting): those not sent are
        never sent, those sent are skipped by their actors if not started yet, and no reply of
        one an actor runs is read (Ray cannot interrupt it, so it ends as it would and no
        site's state is left half-updated). Returns them."""
        closed = self.tasks()
        by_actor: dict[int, list[int]] = {}
        for task, ticket in self.flying.values():
            by_actor.setdefault(self.pool.owner[task.site_id], []).append(ticket)
        for a, tickets in sorted(by_actor.items()):
            self.pool.close_tickets(a, tickets)
        self.flying.clear()
        self.backlog.clear()
        self.busy.clear()
        return closed

    def next(self, deadline: float | None) -> Reply | None:
        """The next reply to arrive, or ``None`` when none is open or the deadline passed."""
        if not self.flying:
            return None
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _ = self.pool.ray.wait(list(self.flying), num_returns=1, timeout=left)
        if not ready:
            return None
        task, _ = self.flying.pop(ready[0])
        a = self.pool.owner[task.site_id]
        self.busy[a] -= 1
        reply = self.pool.result(task, ready[0])
        self._fill(a)
        return reply
