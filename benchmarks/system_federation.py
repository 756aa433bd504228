"""A real federation on 127.0.0.1 for the system benchmark: run one study, read its rounds.

Provisions a throwaway federation (CA, coordinator and site kits) in a folder, starts one
coordinator process and one site-agent process per site of the ``synthetic`` dataset, as
``fedcare demo`` does (mutual TLS, real gRPC), submits the study through the coordinator's
store, waits for it to finish, and returns the rounds' stored ``duration_s`` and completion
times and the processes' peak resident memory (``VmHWM``). Every process it starts is stopped
before it returns, also on errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from fedcare.cli.demo import Processes, local_federation, start_federation
from fedcare.coordinator.server import default_db_url
from fedcare.coordinator.store import CoordinatorStore
from fedcare.errors import FedcareError
from fedcare.records.study import StudyConfig

__all__ = ["FederationRun", "mem_available_mb", "peak_rss_mb", "run_federation"]

#: Stop the federation (and fail the run) when the machine has less memory left than this.
MIN_AVAILABLE_MB = 3000.0


@dataclass(frozen=True)
class FederationRun:
    """What one study over the gRPC grid measured."""

    durations: list[float]  # stored duration_s of rounds 1..R
    completed_gaps: list[float]  # completed_at(r) - completed_at(r - 1), rounds 2..R
    wall_s: float  # submit to completion
    coordinator_rss_mb: float
    site_rss_mb: float  # largest site agent + its task worker
    total_rss_mb: float  # peak of the sum over all its processes, sampled every 0.2 s
    min_available_mb: float  # least MemAvailable of the machine seen meanwhile
    status: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of ``pid`` (``VmHWM``) in MB; NaN when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return float("nan")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _site_rss_mb(pid: int) -> float:
    """The agent's peak plus its task worker's (a child process)."""
    return peak_rss_mb(pid) + sum(peak_rss_mb(c) for c in _children(pid))


def _provision(root: Path, sites: list[str], port: int) -> tuple[Path, dict[str, Path]]:
    return local_federation(
        root, name="fedcare-system-benchmark", port=port, sites=sites, dataset="synthetic"
    )


def _start(procs: Processes, root: Path, sites: list[str]) -> tuple[int, list[int], Path]:
    """Start the coordinator and the site agents; return their pids and the coordinator home."""
    port = _free_port()
    kit, data_files = _provision(root, sites, port)
    home, coordinator, agents = start_federation(
        procs, root, kit, data_files, port=port, liveness=60, approve_all=True
    )
    for proc in (coordinator, *agents):
        _first_to_go(proc.pid)
    return coordinator.pid, [a.pid for a in agents], home


def _first_to_go(pid: int) -> None:
    """Ask the kernel to kill this process (and the workers it starts) first if memory runs out.

    The benchmark shares the machine with other jobs; a federation that outgrows the memory
    must not take them down with it.
    """
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/oom_score_adj").write_text("1000")


def mem_available_mb() -> float:
    """``MemAvailable`` of this machine in MB (NaN when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return float("nan")


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return 0.0


@dataclass
class _Watch:
    """Peak total resident memory of the federation and the least memory left on the machine."""

    pids: list[int]
    peak_total_mb: float = 0.0
    min_available_mb: float = float("inf")

    def sample(self) -> None:
        tree = [*self.pids, *(c for p in self.pids[1:] for c in _children(p))]
        self.peak_total_mb = max(self.peak_total_mb, sum(_rss_mb(p) for p in tree))
        available = mem_available_mb()
        self.min_available_mb = min(self.min_available_mb, available)
        if available < MIN_AVAILABLE_MB:
            raise FedcareError(
                f"memory guard: only {available:.0f} MB left on this machine (federation "
                f"peak {self.peak_total_mb:.0f} MB); stopping the federation"
            )


def _wait(
    store: CoordinatorStore, study_id: str, procs: Processes, watch: _Watch, limit_s: float
) -> str:
    end = time.monotonic() + limit_s
    while True:
        procs.check()
        watch.sample()
        info = store.get_study(study_id)
        if info.status not in ("pending", "running"):
            return str(info.status) + (f": {info.reason}" if info.reason else "")
        if time.monotonic() > end:
            raise FedcareError(
                f"study {study_id} still {info.status} after {limit_s:.0f} s "
                f"(last completed round {info.last_completed_round}); logs in {procs.logs}"
            )
        time.sleep(0.2)


def run_federation(
    study: StudyConfig, sites: list[str], root: Path, *, limit_s: float = 900.0
) -> FederationRun:
    """Run ``study`` on a fresh federation under ``root`` (see the module docstring).

    A run stopped by the memory guard, the time limit or a process that exits returns the
    rounds completed until then, with ``status`` saying why it stopped.
    """
    procs = Processes(root)
    try:
        coordinator, agents, home = _start(procs, root, sites)
        watch = _Watch([coordinator, *agents])
        with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
            start = time.perf_counter()
            study_id = store.create_study(study.name, study.model_dump(mode="json"), study.seed)
            try:
                status = _wait(store, study_id, procs, watch, limit_s)
            except FedcareError as err:
                status = f"stopped: {err}"
            wall = time.perf_counter() - start
            rss = (peak_rss_mb(coordinator), max(_site_rss_mb(pid) for pid in agents))
            procs.stop_all()
            rounds = [r for r in store.list_rounds(study_id) if r.round >= 1]
    finally:
        procs.stop_all()
    done = [r.completed_at for r in rounds]
    return FederationRun(
        durations=[r.duration_s for r in rounds],
        completed_gaps=[(b - a).total_seconds() for a, b in itertools.pairwise(done)],
        wall_s=wall,
        coordinator_rss_mb=rss[0],
        site_rss_mb=rss[1],
        total_rss_mb=watch.peak_total_mb,
        min_available_mb=watch.min_available_mb,
        status=status,
    )
