"""Site fit memory benchmark: peak RSS and time of ONE site ``fit`` on a large torch model.

The model is ``system.py``'s 100M size (a torch ``mlp`` with hidden widths (10000, 10000) on the
10 features of the ``synthetic`` dataset: 100,030,001 float32 parameters, 400 MB), trained for
one SGD step on a batch of 8 rows, as a site's worker runs it: ``SiteRuntime.fit`` (model
built from the plan, params checked, trained, exported, ``delta = new - old``, the reply).

The task's params arrive as READ-ONLY numpy views of a memory-mapped file (``np.frombuffer``
over ``mmap``, as a streamed download spilled to disk gives them): their pages count in the
worker's RSS once read. The parent process writes random float32 params to a raw file in a
temporary folder; each measurement runs in a fresh subprocess that

1. imports fedcare and torch, loads the site's data, builds the task (nothing of the model
   touched yet) and runs one fit of a tiny ``mlp`` (hidden 32) through the same code path (the
   imports and torch's first kernels cost ~80 MB): its ``ru_maxrss`` there is the process's own
   **baseline**;
2. runs ``SiteRuntime.fit`` once: the peak ``ru_maxrss`` after it is the **peak**, and the
   wall time of ``fit`` is the **time**.

Besides ``ru_maxrss`` (anonymous and file-backed pages alike) a thread polls ``RssAnon`` from
``/proc/self/status`` every millisecond during step 2 (and once after step 1 for the anonymous
baseline): its maximum is the **peak anonymous** memory, what the kernel cannot write back to a
file and drop. ``--memory-budget-mb`` sets the site's memory budget for the fit
(:mod:`fedcare.models.torch_offload`: a model over a quarter of it keeps its params in a
memory-mapped scratch file, created in ``--scratch-dir``, default the temporary folder, which
must be on a disk): those pages count in the RSS, not in the anonymous memory.

The target of issue 16 is ``peak <= baseline + 3 x model size``. ``--src`` runs the fit with
another checkout's ``src`` first on the path (e.g. main's, for the "before" row): the
``--label`` names it in the rows. Writes ``benchmarks/results/site_fit_memory.json`` (rows of
the other labels already there are kept) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from results_file import write_rows

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "site_fit_memory.json"
N_FEATURES = 10
HIDDEN = (10_000, 10_000)
TARGET_COPIES = 3


def layout(hidden: tuple[int, ...], n_in: int = N_FEATURES) -> list[tuple[str, tuple[int, ...]]]:
    """``mlp``'s state-dict names and shapes (Flatten at 0, Linear/ReLU pairs, then Linear)."""
    out: list[tuple[str, tuple[int, ...]]] = []
    width, index = n_in, 1
    for size in [*hidden, 1]:
        out += [(f"{index}.weight", (size, width)), (f"{index}.bias", (size,))]
        width, index = size, index + 2
    return out


def write_params(path: Path, shapes: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> int:
    """Random float32 params (scale 0.01), one array after the other, raw; returns bytes."""
    rng = np.random.default_rng(seed)
    total = 0
    with path.open("wb") as fh:
        for _, shape in shapes:
            left = math.prod(shape)
            while left:
                n = min(left, 1 << 22)
                fh.write((rng.standard_normal(n, dtype=np.float32) * 0.01).tobytes())
                left -= n
                total += 4 * n
    return total


def mapped_params(path: Path, shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, Any]:
    """Read-only views of the raw file's arrays (``np.frombuffer`` over a read-only mmap)."""
    with path.open("rb") as fh:
        buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    arrays, offset = {}, 0
    for name, shape in shapes:
        n = math.prod(shape)
        arrays[name] = np.frombuffer(buf, np.float32, n, offset).reshape(shape)
        offset += 4 * n
    return arrays


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def rss_anon_mb() -> float:
    """This process's anonymous resident memory now (``RssAnon``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class AnonPeak:
    """The highest ``RssAnon`` seen, polled every millisecond in a thread while in use."""

    def __init__(self) -> None:
        self.peak = rss_anon_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss_anon_mb())

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_mb())


def child(
    path: Path, hidden: tuple[int, ...], budget_mb: float | None, scratch: Path
) -> dict[str, float]:
    """One fit in this (fresh) process: baseline and peak RSS and anonymous memory in MB, fit
    time in s; ``budget_mb``: the site's memory budget (scratch files in ``scratch``)."""
    import torch  # noqa: F401  (the baseline includes torch)

    from fedcare.data.synthetic import load_synthetic
    from fedcare.models.registry import build_model
    from fedcare.records.arrays import ArrayRecord
    from fedcare.records.messages import Task
    from fedcare.site.runtime import SiteRuntime

    site = load_synthetic(num_sites=4, n_features=N_FEATURES).sites[0]
    params = ArrayRecord(mapped_params(path, layout(hidden)), copy=False)
    task = Task(
        "site-fit-memory",
        1,
        site.site_id,
        "fit",
        params=params,
        config={"max_steps": 1, "batch_size": 8, "optimizer": "sgd", "lr": 0.01, "seed": 0},
        plan={"model": {"kind": "torch", "architecture": "mlp", "hidden": list(hidden)}},
    )
    runtime = SiteRuntime(site)
    if budget_mb is not None:
        from fedcare.models.torch_offload import ParamOffload

        runtime.param_offload = ParamOffload.from_budget(budget_mb, scratch)
    small = {"kind": "torch", "architecture": "mlp", "hidden": [32]}
    tiny = build_model(small).init_params((N_FEATURES,), np.random.default_rng(0))
    warm = Task("warm", 1, site.site_id, "fit", tiny, task.config, plan={"model": small})
    runtime.fit(warm)  # the same code path on a tiny model: imports, torch's first kernels
    baseline, baseline_anon = maxrss_mb(), rss_anon_mb()
    with AnonPeak() as anon:
        start = time.perf_counter()
        reply = runtime.fit(task)
        seconds = time.perf_counter() - start
    peak = maxrss_mb()
    return {
        "baseline_mb": baseline,
        "peak_mb": peak,
        "baseline_anon_mb": baseline_anon,
        "peak_anon_mb": anon.peak,
        "fit_s": seconds,
        "update_mb": reply.arrays.nbytes / 1e6,
        "finite": float(reply.arrays.all_finite()),
    }


def run_child(
    path: Path, src: Path | None, budget_mb: float | None, scratch: Path
) -> dict[str, float]:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path)]
    cmd += ["--scratch-dir", str(scratch)]
    if budget_mb is not None:
        cmd += ["--memory-budget-mb", str(budget_mb)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"fit subprocess failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows_for(
    label: str, runs: list[dict[str, float]], model_mb: float, budget_mb: float | None
) -> list[dict[str, Any]]:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    budget = "no memory budget" if budget_mb is None else f"memory_budget_mb={budget_mb:g}"
    notes = (
        f"one SiteRuntime.fit of mlp {list(HIDDEN)} on {N_FEATURES} features "
        f"({model_mb:,.0f} MB float32), 1 SGD step (batch 8), params a read-only mmap of a "
        f"file; {budget}; anonymous: RssAnon polled every ms; fresh subprocess per run; "
        f"{label}; {machine}"
    )
    out = []
    for metric, key, unit in (
        ("worker_baseline_rss_mb@100M", "baseline_mb", "MB"),
        ("worker_peak_rss_mb@100M", "peak_mb", "MB"),
        ("worker_baseline_anon_mb@100M", "baseline_anon_mb", "MB"),
        ("worker_peak_anon_mb@100M", "peak_anon_mb", "MB"),
        ("fit_time_s@100M", "fit_s", "s"),
    ):
        if key not in runs[0]:  # an older checkout's child (--src) reports no anonymous peak
            continue
        values = [r[key] for r in runs]
        out.append(
            {
                "benchmark": "site_fit_memory",
                "dataset": "synthetic",
                "method": label,
                "metric": metric,
                "mean": round(float(np.mean(values)), 3),
                "sd": round(float(np.std(values, ddof=1)), 3) if len(values) > 1 else 0.0,
                "n": len(values),
                "unit": unit,
                "notes": notes,
            }
        )
    for metric, peak, base, why in (
        ("worker_model_copies@100M", "peak_mb", "baseline_mb", f"target <= {TARGET_COPIES}"),
        ("worker_anon_copies@100M", "peak_anon_mb", "baseline_anon_mb", "anonymous memory"),
    ):
        if peak not in runs[0]:
            continue
        copies = [(r[peak] - r[base]) / model_mb for r in runs]
        spread = round(float(np.std(copies, ddof=1)), 3) if len(copies) > 1 else 0.0
        out.append(
            {
                **out[1],
                "metric": metric,
                "mean": round(float(np.mean(copies)), 3),
                "sd": spread,
                "unit": "copies",
                "notes": f"({peak} - {base}) / model size; {why}; {notes}",
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help="a checkout's src folder to import fedcare from")
    parser.add_argument("--label", default="this checkout", help="the rows' method")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--memory-budget-mb", type=float, help="the site's memory budget for the fit (MB)"
    )
    parser.add_argument("--scratch-dir", type=Path, help="where scratch files go (on a disk)")
    args = parser.parse_args()
    if args.child is not None:
        scratch = args.scratch_dir or args.child.parent
        print(json.dumps(child(args.child, HIDDEN, args.memory_budget_mb, scratch)))
        return
    shapes = layout(HIDDEN)
    with tempfile.TemporaryDirectory(prefix="fedcare-fit-memory-") as tmp:
        path = Path(tmp) / "params.f32"
        model_mb = write_params(path, shapes) / 1e6
        scratch = args.scratch_dir or Path(tmp) / "scratch"
        budget = args.memory_budget_mb
        runs = [run_child(path, args.src, budget, scratch) for _ in range(args.repeats)]
    new_rows = rows_for(args.label, runs, model_mb, args.memory_budget_mb)
    kept = []
    if RESULTS.exists():
        kept = [r for r in json.loads(RESULTS.read_text()) if r["method"] != args.label]
    rows = kept + new_rows
    print(f"{'method':<36} {'metric':<30} {'mean':>10} {'sd':>8}  unit")
    for row in rows:
        print(
            f"{row['method']:<36} {row['metric']:<30} {row['mean']:>10,.3f} "
            f"{row['sd']:>8,.3f}  {row['unit']}"
        )
    write_rows(rows, RESULTS)


if __name__ == "__main__":
    main()
