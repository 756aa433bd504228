"""Aggregation memory benchmark: the coordinator's peak RSS for one FedAvg round of a big model.

Issue 16 (bounded memory): a coordinator must aggregate a 100M-parameter float32 model (400 MB)
from 4 sites with a peak of about 3 model copies plus a bounded buffer (target: peak RSS
<= 1,500 MB). The model here is two dense layers of ``--rows`` x ``--cols`` float32 weights with
their biases (default 5,000 x 10,000: 100,010,000 parameters). Each of the 4 replies is stored
in files and memory-mapped read-only (``np.memmap(mode="r")``), as replies arriving from disk
will be, and fed as a stream to ``FedAvg().aggregate_fit`` (default stack: validation with the
outlier screening around a sample-weighted mean, then the server SGD step).

Each variant runs in a fresh subprocess with its own ``fedcare`` source on ``PYTHONPATH``:

* ``before``: the code at ``--baseline-ref`` (default: the commit before the blockwise
  aggregation), extracted with ``git archive`` into a temporary folder;
* ``after``: this checkout's ``src``.

The child loads the global params into memory (as the coordinator holds them), builds the
strategy state, then runs one ``aggregate_fit``; it reports ``ru_maxrss`` (the peak resident
set, mapped file pages included) after the imports, after the state is built, and at the end,
the seconds ``aggregate_fit`` took, and a hash of the new params (the variants must agree
bitwise). Rows (``benchmarks/results/aggregation_memory.json``): ``peak_rss`` (MB, whole
process), ``rss_before_round`` (MB: interpreter, imports, params and strategy state),
``round_increase`` (``peak_rss - rss_before_round``) and ``aggregate_seconds``; ``n`` is the
number of fresh processes per variant, ``sd`` over them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from results_file import write_rows

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "aggregation_memory.json"
#: main before the blockwise aggregation (issue 16): the "before" variant.
BASELINE_REF = "80d0d6eedbcaf67b6bbe6a7a7a1882da1c351266"
SITES = 4
CHUNK = 1 << 22  # elements written per step when making the files
Row = dict[str, Any]


def shapes(rows: int, cols: int) -> dict[str, tuple[int, ...]]:
    return {"l1/w": (rows, cols), "l1/b": (rows,), "l2/w": (rows, cols), "l2/b": (rows,)}


def write_files(folder: Path, rows: int, cols: int, seed: int) -> None:
    """The global params and each site's update, one raw float32 file per array."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for owner in ["params", *(f"site{i}" for i in range(SITES))]:
        scale = 0.05 if owner == "params" else 1e-3 * (1 + int(owner[-1]))
        for name, shape in shapes(rows, cols).items():
            size = int(np.prod(shape))
            with (folder / f"{owner}.{name.replace('/', '.')}.f32").open("wb") as f:
                for start in range(0, size, CHUNK):
                    n = min(CHUNK, size - start)
                    f.write((rng.standard_normal(n, dtype=np.float32) * scale).tobytes())


def max_rss_mb() -> float:
    """Peak resident set of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def child(folder: Path, rows: int, cols: int) -> dict[str, Any]:
    """One round in this process; what it measured."""
    import numpy as np

    import fedcare
    from fedcare.records.arrays import ArrayRecord
    from fedcare.records.messages import Reply
    from fedcare.strategy import FedAvg

    imports = max_rss_mb()
    names = shapes(rows, cols)

    def path(owner: str, name: str) -> Path:
        return folder / f"{owner}.{name.replace('/', '.')}.f32"

    params = ArrayRecord(
        {k: np.fromfile(path("params", k), dtype=np.float32).reshape(s) for k, s in names.items()},
        copy=False,
    )
    strategy = FedAvg()
    state = strategy.init_state(params)
    del params
    ready = max_rss_mb()

    def replies() -> Iterator[Reply]:  # each reply mapped when the loop asks for it
        for i in range(SITES):
            arrays = {
                k: np.memmap(path(f"site{i}", k), dtype=np.float32, mode="r", shape=s)
                for k, s in names.items()
            }
            reply = Reply("bench", 1, f"site{i}", "fit", ArrayRecord(arrays, copy=False), 100 + i)
            del arrays
            yield reply
            del reply

    start = time.perf_counter()
    state, measurements = strategy.aggregate_fit(1, state, replies(), num_available=SITES)
    seconds = time.perf_counter() - start
    digest = hashlib.sha256()
    for k in names:
        digest.update(state.params[k].tobytes())
    return {
        "rss_imports": imports,
        "rss_before_round": ready,
        "peak_rss": max_rss_mb(),
        "aggregate_seconds": seconds,
        "params_sha256": digest.hexdigest(),
        "contributions": measurements["num_contributions"],
        "fedcare": str(Path(fedcare.__file__).parent),
    }


def baseline_src(ref: str, into: Path) -> Path:
    """``src`` of ``ref`` extracted into ``into``."""
    archive = into / "src.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _vm_rss_mb(pid: int) -> float:
    """The current resident set of process ``pid`` in MB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def run_variant(src: Path, folder: Path, rows: int, cols: int) -> dict[str, Any]:
    """Run one child with ``src`` on its path; its report plus the peak of ``VmRSS`` sampled
    every millisecond from outside (a check on ``ru_maxrss``)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, __file__, "--child", str(folder), "--rows", str(rows)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([*cmd, "--cols", str(cols)], env=env, stdout=out, stderr=err)
        sampled = 0.0
        while proc.poll() is None:
            sampled = max(sampled, _vm_rss_mb(proc.pid))
            time.sleep(0.001)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"variant with {src} failed:\n{err.read()[-3000:]}")
        return {**json.loads(out.read().splitlines()[-1]), "sampled_peak_rss": sampled}


def _row(method: str, metric: str, values: Sequence[float], unit: str, notes: str) -> Row:
    return {
        "benchmark": "aggregation_memory",
        "dataset": "synthetic",
        "method": method,
        "metric": metric,
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "unit": unit,
        "notes": notes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--cols", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per variant")
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    parser.add_argument("--workdir", type=Path, default=None, help="where the files go")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.rows, args.cols)))
        return 0
    num_params = sum(math.prod(s) for s in shapes(args.rows, args.cols).values())
    model_mb = 4 * num_params / 1e6
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        write_files(folder, args.rows, args.cols, seed=16)
        variants = {"before": baseline_src(args.baseline_ref, folder), "after": REPO / "src"}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, src in variants.items():
                runs[name].append(run_variant(src, folder, args.rows, args.cols))
    hashes = {r["params_sha256"] for rs in runs.values() for r in rs}
    same = "the same params (SHA-256) in every run" if len(hashes) == 1 else "PARAMS DIFFER"
    notes = (
        f"{num_params:,} float32 parameters ({model_mb:.0f} MB): 2 layers {args.rows}x{args.cols} "
        f"+ biases; {SITES} replies memory-mapped read-only from files; FedAvg default stack, one "
        f"aggregate_fit per fresh process; before = {args.baseline_ref[:12]}; {same}"
    )
    rows: list[Row] = []
    header = ["variant", "imports MB", "before round MB", "peak MB", "sampled MB", "round +MB"]
    print("  ".join(f"{h:>15}" for h in [*header, "seconds"]))
    for name, rs in runs.items():
        columns = {
            "peak_rss": [r["peak_rss"] for r in rs],
            "sampled_peak_rss": [r["sampled_peak_rss"] for r in rs],
            "rss_before_round": [r["rss_before_round"] for r in rs],
            "round_increase": [r["peak_rss"] - r["rss_before_round"] for r in rs],
        }
        seconds = [r["aggregate_seconds"] for r in rs]
        imports = statistics.fmean(r["rss_imports"] for r in rs)
        shown = ("rss_before_round", "peak_rss", "sampled_peak_rss", "round_increase")
        means = [imports, *(statistics.fmean(columns[k]) for k in shown)]
        cells = [f"{name:>15}", *(f"{v:>15.0f}" for v in means)]
        print("  ".join([*cells, f"{statistics.fmean(seconds):>15.2f}"]))
        rows += [_row(name, metric, values, "MB", notes) for metric, values in columns.items()]
        rows.append(_row(name, "aggregate_seconds", seconds, "s", notes))
    print(f"model {model_mb:.0f} MB; {same}")
    write_rows(rows, args.out)
    return 0 if len(hashes) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
