"""A real federation on 127.0.0.1 for the system benchmark: run one study, read its rounds.

Provisions a throwaway federation (CA, coordinator and site kits) in a folder, starts one
coordinator process and one site-agent process per site of the ``synthetic`` dataset, as
``fedcare demo`` does (mutual TLS, real gRPC), submits the study through the coordinator's
store, waits for it to finish, and returns the rounds' stored ``duration_s``, completion times
and fit records. Every process it starts is stopped before it returns, also on errors and
Ctrl-C.

Memory (:mod:`process_memory`): every 0.2 s, and once more after the study ends and before
anything is stopped, each process tree is read from ``/proc``: the coordinator's, and per site
the agent's with its task worker and helpers. The run returns the watch: per process its own
peak (``VmHWM``), per site and for the whole federation the polled peaks of the summed
resident memory. A site may be told to reach the coordinator through another address
(``addresses``: the byte-counting proxy of the resume measurement, :mod:`tcp_proxy`).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.cli.demo import Processes, local_federation, start_federation
from fedcare.coordinator.server import default_db_url
from fedcare.coordinator.store import CoordinatorStore
from fedcare.errors import FedcareError
from fedcare.records.study import StudyConfig
from process_memory import TreeWatch, mem_available_mb

__all__ = ["FederationRun", "free_port", "mem_available_mb", "run_federation"]

#: Stop the federation (and fail the run) when the machine has less memory left than this.
MIN_AVAILABLE_MB = 3000.0
#: Seconds between two samples of the processes' memory (and of the study's status).
SAMPLE_S = 0.2


@dataclass(frozen=True)
class FederationRun:
    """What one study over the gRPC grid measured."""

    durations: list[float]  # stored duration_s of rounds 1..R
    completed_gaps: list[float]  # completed_at(r) - completed_at(r - 1), rounds 2..R
    fits: list[dict[str, Any]]  # each round's fit record (sampled_sites, failed_sites, ...)
    tasks: list[dict[str, Any]]  # every task: round, attempt, site, kind, status, error
    wall_s: float  # submit to completion
    memory: TreeWatch  # groups "coordinator" and each site id
    sites: tuple[str, ...]
    status: str

    @property
    def coordinator_rss_mb(self) -> float:
        """Peak resident memory (``VmHWM``) of the coordinator process itself."""
        procs = self.memory.peak("coordinator").processes
        return next((p.hwm_mb for p in procs if p.name == "coordinator"), float("nan"))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _first_to_go(pid: int) -> None:
    """Ask the kernel to kill this process (and the workers it starts) first if memory runs out.

    The benchmark shares the machine with other jobs; a federation that outgrows the memory
    must not take them down with it.
    """
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/oom_score_adj").write_text("1000")


def _start(
    procs: Processes,
    root: Path,
    sites: list[str],
    port: int,
    addresses: Mapping[str, str],
    coordinator_args: Sequence[str] = (),
    site_budget_mb: float | None = None,
) -> tuple[Path, dict[str, int]]:
    """Start the coordinator and the site agents (each told its coordinator address when
    ``addresses`` names one, each site's data file given ``memory_budget_mb`` when
    ``site_budget_mb`` is); return the coordinator home and the pids by group."""
    kit, data_files = local_federation(
        root, name="fedcare-system-benchmark", port=port, sites=sites, dataset="synthetic"
    )
    if site_budget_mb is not None:
        for data in data_files.values():
            with Path(data).open("a", encoding="utf-8") as f:
                f.write(f"\nmemory_budget_mb: {site_budget_mb:g}\n")
    home, coordinator, _ = start_federation(
        procs, root, kit, {}, port=port, liveness=60, approve_all=True,
        coordinator_args=coordinator_args,
    )  # fmt: skip
    pids = {"coordinator": coordinator.pid}
    for site, data in data_files.items():
        via = ["--coordinator", addresses[site]] if site in addresses else []
        agent = procs.start(
            site, "site", "start", "--kit", str(kit.parent / "sites" / site), "--data",
            str(data), "--state", str(root / "state" / site), "--approve-all", *via,
        )  # fmt: skip
        pids[site] = agent.pid
    for pid in pids.values():
        _first_to_go(pid)
    _wait_for_hello(procs, home, sites)
    return home, pids


def _wait_for_hello(procs: Processes, home: Path, sites: list[str], limit_s: float = 120) -> None:
    """Wait until every site said Hello (a study's statistics round then reaches them all)."""
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        end = time.monotonic() + limit_s
        while True:
            procs.check()
            if {s.id for s in store.list_sites() if s.first_seen is not None} >= set(sites):
                return
            if time.monotonic() > end:
                raise FedcareError(f"sites did not all connect within {limit_s:.0f} s")
            time.sleep(SAMPLE_S)


def _sample(watch: TreeWatch) -> None:
    available = watch.sample()
    if available < MIN_AVAILABLE_MB:
        raise FedcareError(
            f"memory guard: only {available:.0f} MB left on this machine (federation "
            f"peak {watch.total_rss_mb:.0f} MB); stopping the federation"
        )


def _wait(
    store: CoordinatorStore,
    study_id: str,
    procs: Processes,
    watch: TreeWatch,
    limit_s: float,
    on_sample: Callable[[], None] | None,
) -> str:
    end = time.monotonic() + limit_s
    while True:
        procs.check()
        _sample(watch)
        if on_sample is not None:
            on_sample()
        info = store.get_study(study_id)
        if info.status not in ("pending", "running"):
            return str(info.status) + (f": {info.reason}" if info.reason else "")
        if time.monotonic() > end:
            raise FedcareError(
                f"study {study_id} still {info.status} after {limit_s:.0f} s "
                f"(last completed round {info.last_completed_round}); logs in {procs.logs}"
            )
        time.sleep(SAMPLE_S)


def _tasks(store: CoordinatorStore, study_id: str) -> list[dict[str, Any]]:
    """Every task of the study, oldest first, with its reply's error if it failed."""
    tasks = store.list_tasks(study_id)
    errors = {
        r.task_id: f"{r.error_kind}: {r.error_message}"
        for key in sorted({(t.round, t.attempt) for t in tasks})
        for r in store.replies_for_round(study_id, *key)
        if not r.ok
    }
    return [
        {"round": t.round, "attempt": t.attempt, "site": t.site_id, "kind": t.kind,
         "status": t.status, "error": errors.get(t.id, "")}
        for t in tasks
    ]  # fmt: skip


def run_federation(
    study: StudyConfig,
    sites: list[str],
    root: Path,
    *,
    limit_s: float = 900.0,
    port: int | None = None,
    addresses: Mapping[str, str] | None = None,
    on_sample: Callable[[], None] | None = None,
    coordinator_args: Sequence[str] = (),
    site_budget_mb: float | None = None,
) -> FederationRun:
    """Run ``study`` on a fresh federation under ``root`` (see the module docstring).

    ``port``: the coordinator's (default: a free one); ``addresses``: site id -> the
    ``host:port`` that site's agent dials instead of the coordinator's; ``on_sample``: called
    at every sample (every 0.2 s) while the study runs; ``site_budget_mb``: each site's
    ``memory_budget_mb`` (a large model's params in a mapped scratch file). A run stopped by
    the memory guard, the time limit or a process that exits returns the rounds completed
    until then, with ``status`` saying why it stopped.
    """
    procs = Processes(root)
    port = free_port() if port is None else port
    try:
        home, pids = _start(
            procs, root, sites, port, dict(addresses or {}), coordinator_args, site_budget_mb
        )
        names = {"coordinator": "coordinator", **{s: "agent" for s in sites}}
        watch = TreeWatch(pids, names)
        with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
            start = time.perf_counter()
            study_id = store.create_study(study.name, study.model_dump(mode="json"), study.seed)
            try:
                status = _wait(store, study_id, procs, watch, limit_s, on_sample)
            except FedcareError as err:
                status = f"stopped: {err}"
            wall = time.perf_counter() - start
            watch.sample()  # the last look at every process, before any is stopped
            procs.stop_all()
            rounds = [r for r in store.list_rounds(study_id) if r.round >= 1]
            tasks = _tasks(store, study_id)
    finally:
        procs.stop_all()
    done = [r.completed_at for r in rounds]
    return FederationRun(
        durations=[r.duration_s for r in rounds],
        completed_gaps=[(b - a).total_seconds() for a, b in itertools.pairwise(done)],
        fits=[dict(r.record.get("fit") or {}) for r in rounds],
        tasks=tasks,
        wall_s=wall,
        memory=watch,
        sites=tuple(sites),
        status=status,
    )
