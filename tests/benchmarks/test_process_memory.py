"""Per-process peaks of the system benchmark (``benchmarks/process_memory.py``): a real
process tree whose grandchild holds 200 MB, then frees it, read from ``/proc``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from process_memory import TreeWatch, descendants, read_status

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")

HELD_MB = 200
GRANDCHILD = f"""
import sys
block = b"x" * {HELD_MB * 1_000_000}  # written, so resident
print("held", flush=True)
sys.stdin.readline()
del block
print("freed", flush=True)
sys.stdin.read()
"""
PARENT = (
    f"import subprocess, sys; subprocess.run([sys.executable, '-c', {GRANDCHILD!r}], check=True)"
)


def test_descendants_walks_the_whole_tree_and_nothing_else() -> None:
    parents = {2: (1, 0), 3: (2, 0), 4: (2, 0), 5: (3, 0), 6: (9, 0), 1: (0, 0)}
    assert descendants(1, parents) == [2, 3, 4, 5]
    assert descendants(3, parents) == [5]
    assert descendants(6, parents) == []


def test_a_grandchilds_peak_is_kept_after_it_frees_its_memory() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "held"
        watch = TreeWatch({"site": proc.pid}, {"site": "agent"})
        watch.sample()
        group = watch.peak("site")
        assert group.processes[0].name == "agent"
        (child,) = [p for p in group.processes if p.name != "agent"]
        assert child.hwm_mb >= HELD_MB
        assert group.rss_mb >= HELD_MB and group.anon_mb >= HELD_MB
        assert watch.total_rss_mb == pytest.approx(group.rss_mb)

        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "freed"
        status = read_status(child.pid)
        assert status is not None and status["VmRSS"] < HELD_MB / 2  # given back
        watch.sample()
        assert child.hwm_mb >= HELD_MB  # its own peak (VmHWM) stays
        assert group.rss_mb >= HELD_MB  # the polled peak is the largest sum seen
        assert group.sum_of_peaks_mb >= HELD_MB + group.processes[0].hwm_mb
        assert group.by_name()[child.name] >= HELD_MB
        assert watch.samples == 2
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    watch.sample()  # everything exited: the last values read stay
    assert child.hwm_mb >= HELD_MB
    assert read_status(child.pid) is None
