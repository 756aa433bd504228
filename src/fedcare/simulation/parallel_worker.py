"""The worker side of :class:`~fedcare.simulation.parallel.ParallelGrid`: one process that
builds its sites' :class:`~fedcare.site.app.SiteApp` s once, says it is ready (``(0, None, None)``;
``(0, why, None)`` when it could not build them), then answers ``(call, task, sent)`` items
from its queue until ``None`` with ``(call, reply, layout)``: a large reply's arrays are in one of
the worker's shared-memory slots (:mod:`fedcare.simulation.reply_slots`), ``layout`` says where,
and ``reply`` comes without them; ``layout`` is ``None`` when the reply came whole.

A task sent without parameters (``sent`` false) uses the last ones this worker was sent; with
``sent`` a :class:`~fedcare.simulation.reply_slots.Layout` its parameters are in a shared-memory
file (read, and removed, at once). Tasks
of a call that closed before the worker started them (a positive ``call`` up to the shared
``closed`` value: a deadline, or a quorum and its grace) are skipped; asynchronous tasks have
negative calls and are never skipped (a cancelled one's reply is dropped by the parent).
"""

from __future__ import annotations

import pickle
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from fedcare.data.base import SiteData
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply
from fedcare.simulation.reply_slots import Layout, SlotWriter, take_params
from fedcare.site.app import Mod, SiteApp
from fedcare.transport.inmemory import call_site

__all__ = ["START_S", "await_ready", "call_site", "worker_main"]

#: Seconds a new grid waits for its workers to build their sites.
START_S = 600.0


def worker_main(
    sites: list[SiteData],
    mods: Mapping[str, Sequence[Mod]],
    feature_names: tuple[str, ...],
    site_reports: Path | None,
    inbox: Any,
    outbox: Connection,
    torch_threads: int | None,
    closed: Any,
    slots: tuple[Path, int, Any, Any],
) -> None:
    """A worker: build its sites' apps once, then answer ``(call, task)`` until ``None``,
    skipping the tasks of calls up to ``closed.value`` (closed before it started them);
    ``slots`` are the arguments of its :class:`~fedcare.simulation.reply_slots.SlotWriter`."""
    apps: dict[str, SiteApp] = {}
    try:
        if torch_threads is not None:  # torch is loaded in the parent, so it is installed
            from fedcare.models.torch_runtime import import_torch

            import_torch().set_num_threads(torch_threads)
        for site in sites:
            app = SiteApp(site, mods=mods.get(site.site_id, ()), simulated=True)
            app.runtime.feature_names = feature_names
            if site_reports is not None:
                app.runtime.report_dir = site_reports / site.site_id
            apps[site.site_id] = app
    except Exception as err:  # the coordinator's replies name why this worker is gone
        outbox.send((0, traceback.format_exception_only(type(err), err)[-1].strip(), None))
        return
    outbox.send((0, None, None))  # ready: its sites are built
    writer = SlotWriter(*slots)
    del sites
    params = ArrayRecord()  # the last parameters sent (a task without them uses these)
    while (item := inbox.get()) is not None:
        call, task, sent = item
        if isinstance(sent, Layout):  # in a shared-memory file, mapped and removed now
            params = take_params(writer.folder, sent)
        elif sent:
            params = task.params  # kept for later tasks, even if this one is skipped
        if 0 < call <= closed.value:
            continue  # its call closed (deadline, or quorum and grace): nobody waits for it
        task = task if sent is True else replace(task, params=params)
        header, layout = writer.pack(call_site(apps[task.site_id], task))
        try:
            outbox.send((call, header, layout))
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            if layout is not None:
                writer.release(layout)
            failure = Reply.failure(task, "exception", f"reply could not be sent: {err}")
            outbox.send((call, failure, None))


def await_ready(
    conns: Sequence[Connection], procs: Sequence[Any], dead: dict[int, str], deadline: float
) -> None:
    """Wait until every worker built its sites (or failed to, or died), noting in ``dead`` why
    a worker is gone: the start-up of the processes never counts against a round's deadline."""
    waiting = set(range(len(procs)))
    while waiting:
        left = deadline - time.monotonic()
        handles = [h for w in waiting for h in (conns[w], procs[w].sentinel)]
        ready = wait(handles, timeout=max(0.0, left))
        if not ready and left <= 0:
            for w in sorted(waiting):
                dead[w] = f"worker process {w} did not start within {START_S:g} s"
            return
        for w in sorted(waiting):
            if conns[w] in ready:
                try:
                    _, why, _ = conns[w].recv()
                except (EOFError, OSError):
                    why = f"it exited (code {procs[w].exitcode})"
                if why is not None:
                    dead[w] = f"worker process {w} failed to start its sites: {why}"
                waiting.discard(w)
            elif procs[w].sentinel in ready:
                procs[w].join(1.0)
                dead[w] = f"worker process {w} died (exit code {procs[w].exitcode})"
                waiting.discard(w)
