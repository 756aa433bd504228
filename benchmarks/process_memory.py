"""Resident memory of groups of process trees, read from ``/proc`` (Linux only).

A federation on one machine is a few process trees: the coordinator, and per site the agent
with its task worker (a ``multiprocessing`` spawn child, or a bwrap tree when the site
sandboxes it) and ``multiprocessing``'s resource tracker. :class:`TreeWatch` is given the root
pid of each *group* (``{"coordinator": pid, "site-0": pid, ...}``) and, each time
:meth:`TreeWatch.sample` is called (the benchmark calls it every 0.2 s), finds every
descendant of each root by scanning ``/proc/*/stat`` for parent pids (so children started from
any thread, and processes of a bwrap pid namespace, are found), then reads each process's
``/proc/<pid>/status``:

* ``VmHWM``: the kernel's own peak resident set of that process since it started. The last
  value read is kept per process (keyed by pid *and* start time, so a reused pid is a new
  process): a process that exits between two samples loses at most its last 0.2 s.
* ``VmRSS`` and ``RssAnon``: resident now; summed per group and over all groups, and the
  largest sums seen are kept (*polled peaks*, lower bounds of the true peaks).

Two figures per group therefore come out: the **sum of its processes' peaks** (an upper bound
of the group's peak: the processes need not peak at the same time) and the **polled peak of
its summed resident memory** (a lower bound: a peak shorter than 0.2 s can fall between
samples). ``RssAnon`` leaves out file-backed pages (a payload or model read through a memory
map counts in ``VmRSS`` but the kernel can drop those pages again), so its polled peak says how
much of the memory was anonymous (heap) rather than page cache.

Plain standard library, no fedcare imports: tests may use it too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "GroupPeak",
    "ProcessPeak",
    "TreeWatch",
    "descendants",
    "mem_available_mb",
    "parent_map",
    "read_pss",
    "read_status",
]

PROC = Path("/proc")
_FIELDS = ("VmHWM", "VmRSS", "RssAnon")


def read_status(pid: int) -> dict[str, float] | None:
    """``VmHWM``, ``VmRSS`` and ``RssAnon`` of ``pid`` in MB (10^6 bytes); ``None`` when the
    process is gone (or is a zombie, whose memory fields are absent)."""
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    values: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in _FIELDS:
            values[key] = int(rest.split()[0]) * 1024 / 1e6  # the kernel writes kB (KiB)
    return values if "VmHWM" in values else None


def read_pss(pid: int) -> float:
    """``Pss`` of ``pid`` in MB (its share of every page it maps: a page mapped by ``n``
    processes counts ``1/n`` in each), from ``/proc/<pid>/smaps_rollup``; 0 when unknown."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time in clock ticks)`` of ``pid``, or ``None``."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after its end
    fields = text.rpartition(")")[2].split()
    return int(fields[1]), int(fields[19])


def parent_map() -> dict[int, tuple[int, int]]:
    """``{pid: (parent pid, start time)}`` of every process visible in ``/proc``."""
    out: dict[int, tuple[int, int]] = {}
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                out[int(entry.name)] = stat
    return out


def descendants(root: int, parents: Mapping[int, tuple[int, int]]) -> list[int]:
    """Every process below ``root`` (children, their children, ...), breadth first."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, queue = [], list(children.get(root, ()))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue += children.get(pid, ())
    return found


def describe(pid: int) -> str:
    """A short name for a process: ``worker`` for a multiprocessing spawn child or a
    sandboxed fedcare worker, ``resource-tracker``, else its command name."""
    try:
        cmd = (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace")
        comm = (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"
    if "resource_tracker" in cmd:
        return "resource-tracker"
    if "spawn_main" in cmd or "_sandboxed_main" in cmd:
        return "worker"
    return comm


def mem_available_mb() -> float:
    """``MemAvailable`` of this machine in MB (NaN when unknown)."""
    try:
        for line in (PROC / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return float("nan")


@dataclass
class ProcessPeak:
    """One process of a group: what it is and the last ``VmHWM`` read from it."""

    pid: int
    group: str
    name: str  # "coordinator", "agent", "worker", "resource-tracker", "bwrap", ...
    hwm_mb: float = 0.0


@dataclass
class GroupPeak:
    """A group's memory: polled peaks of its summed ``VmRSS`` / ``RssAnon`` and its
    processes' own peaks."""

    group: str
    rss_mb: float = 0.0  # polled peak of the summed VmRSS
    anon_mb: float = 0.0  # polled peak of the summed RssAnon
    processes: list[ProcessPeak] = field(default_factory=list)

    @property
    def sum_of_peaks_mb(self) -> float:
        """Sum of its processes' ``VmHWM`` (an upper bound of the group's peak)."""
        return sum(p.hwm_mb for p in self.processes)

    def by_name(self) -> dict[str, float]:
        """Summed ``VmHWM`` by process name (``{"agent": 512.0, "worker": 900.1, ...}``)."""
        out: dict[str, float] = {}
        for p in self.processes:
            out[p.name] = out.get(p.name, 0.0) + p.hwm_mb
        return out

    def breakdown(self) -> str:
        """``"agent 512 + worker 900 + resource-tracker 12 MB"`` (peaks, largest first)."""
        parts = sorted(self.by_name().items(), key=lambda kv: -kv[1])
        return " + ".join(f"{name} {mb:,.0f}" for name, mb in parts) + " MB"


class TreeWatch:
    """Sample the memory of named process trees (see the module docstring).

    Parameters
    ----------
    roots:
        Group name -> root pid, e.g. ``{"coordinator": 101, "site-0": 102}``.
    root_names:
        Group name -> the name given to its root process (default: the group name).
    """

    def __init__(self, roots: Mapping[str, int], root_names: Mapping[str, str] | None = None):
        self.roots = dict(roots)
        self.root_names = dict(root_names or {})
        self.groups = {g: GroupPeak(g) for g in self.roots}
        self._procs: dict[tuple[int, int], ProcessPeak] = {}
        self.total_rss_mb = 0.0  # polled peak of the summed VmRSS over all groups
        self.total_anon_mb = 0.0
        self.total_pss_mb = 0.0  # polled peak of the summed Pss: shared pages counted once
        self.min_available_mb = float("inf")
        self.samples = 0

    def sample(self) -> float:
        """Read every process of every group once; returns the machine's ``MemAvailable``."""
        parents = parent_map()
        total_rss = total_anon = total_pss = 0.0
        for group, root in self.roots.items():
            rss = anon = 0.0
            for pid in [root, *descendants(root, parents)]:
                status = read_status(pid)
                if status is None or pid not in parents:
                    continue
                rss += status.get("VmRSS", 0.0)
                anon += status.get("RssAnon", 0.0)
                total_pss += read_pss(pid)
                self._process(group, pid, parents[pid][1], root).hwm_mb = status["VmHWM"]
            peak = self.groups[group]
            peak.rss_mb, peak.anon_mb = max(peak.rss_mb, rss), max(peak.anon_mb, anon)
            total_rss, total_anon = total_rss + rss, total_anon + anon
        self.total_rss_mb = max(self.total_rss_mb, total_rss)
        self.total_anon_mb = max(self.total_anon_mb, total_anon)
        self.total_pss_mb = max(self.total_pss_mb, total_pss)
        available = mem_available_mb()
        self.min_available_mb = min(self.min_available_mb, available)
        self.samples += 1
        return available

    def _process(self, group: str, pid: int, start: int, root: int) -> ProcessPeak:
        key = (pid, start)
        proc = self._procs.get(key)
        if proc is None:
            proc = self._procs[key] = ProcessPeak(pid, group, self.root_names.get(group, group))
            self.groups[group].processes.append(proc)
        if pid != root:  # named again each time: a child read between fork and exec looks
            name = describe(pid)  # like its parent
            proc.name = name if name != "?" else proc.name
        return proc

    def peak(self, group: str) -> GroupPeak:
        """What was seen of ``group`` so far."""
        return self.groups[group]

    def sum_of_peaks_mb(self, groups: Iterable[str] | None = None) -> float:
        """Sum of every seen process's ``VmHWM`` (all groups, or ``groups``)."""
        names = self.groups if groups is None else groups
        return sum(self.groups[g].sum_of_peaks_mb for g in names)
