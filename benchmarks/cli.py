"""CLI startup benchmark: wall time of ``fedcare`` commands, each in a fresh Python process.

Runs ``python -m fedcare --help``, ``version``, ``study status --home HOME`` and ``sites --home
HOME`` (HOME: a coordinator home freshly created through the library in a temporary folder,
with one queued study) once each to warm the bytecode cache, then ``--repeats`` times (default
7) each, and reports the median wall time per command, interpreter start included.
Writes ``benchmarks/results/cli.json`` (``metric: cli_startup_s``). Targets (issue 11):
``--help`` and ``version`` at most 0.5 s, status commands at most 1 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fedcare
from fedcare.coordinator.engine import default_db_url
from fedcare.coordinator.store import CoordinatorStore
from results_file import write_rows

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cli.json"
SRC = Path(fedcare.__file__).resolve().parents[1]  # the fedcare the subprocesses must run

#: (label, arguments after ``fedcare``, target in seconds); ``{home}`` is the coordinator home.
COMMANDS: list[tuple[str, list[str], float]] = [
    ("fedcare --help", ["--help"], 0.5),
    ("fedcare version", ["version"], 0.5),
    ("fedcare study status", ["study", "status", "--home", "{home}"], 1.0),
    ("fedcare sites", ["sites", "--home", "{home}"], 1.0),
]


def make_home(root: Path) -> Path:
    """A fresh coordinator home (migrated database, artifact folder) with one queued study."""
    home = root / "coordinator-home"
    home.mkdir()
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        store.create_study("cli-benchmark", {"rounds": 3}, 0)
    return home


def time_command(argv: Sequence[str]) -> float:
    """Seconds one ``python -m fedcare ARGV`` takes, start to exit; raises if it fails."""
    paths = [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "fedcare", *argv], capture_output=True, text=True, env=env
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"fedcare {' '.join(argv)} exited {done.returncode}: {done.stderr}")
    return elapsed


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}/{five:.2f}/{fifteen:.2f} on {os.cpu_count()} cores"


def measure(home: Path, repeats: int) -> list[dict[str, Any]]:
    """One row per command: the median of ``repeats`` runs after one warm-up run."""
    rows = []
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    for label, args, target in COMMANDS:
        argv = [a.format(home=home) for a in args]
        time_command(argv)  # warm-up: bytecode cache, file system cache
        times = [time_command(argv) for _ in range(repeats)]
        median = statistics.median(times)
        verdict = "MET" if median <= target else "MISSED"
        rows.append(
            {
                "benchmark": "cli",
                "dataset": "none",
                "method": label,
                "metric": "cli_startup_s",
                "mean": round(median, 4),
                "sd": round(statistics.stdev(times), 4),
                "n": len(times),
                "unit": "s",
                "notes": (
                    f"median (in 'mean') of fresh `python -m fedcare {' '.join(args)}` processes "
                    f"after one warm-up; runs: {', '.join(f'{t:.3f}' for t in times)} s; "
                    f"{machine}, {_load()}; target <= {target:g} s: {verdict} "
                    f"[median {median:.3f} s]"
                ),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per command (>= 3)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    with tempfile.TemporaryDirectory(prefix="fedcare-cli-bench-") as tmp:
        rows = measure(make_home(Path(tmp)), args.repeats)
    print(f"{'command':<24}{'median s':>10}{'sd s':>8}{'target s':>10}  verdict")
    for row, (_, _, target) in zip(rows, COMMANDS, strict=True):
        verdict = "MET" if row["mean"] <= target else "MISSED"
        print(f"{row['method']:<24}{row['mean']:>10.3f}{row['sd']:>8.3f}{target:>10g}  {verdict}")
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
