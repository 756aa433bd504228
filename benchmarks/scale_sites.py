"""Many simulated sites (issue 17): rows ``round_s@N`` and the 1,000-site training rows.

Each measured run is one *configuration* (backend, number of sites, workload) in a fresh Python
process (``python scale_sites.py --one SPEC``), so its memory peak is its own: the parent
samples the resident memory of that process and every process below it (its workers, Ray's
processes) every 0.2 s with :class:`process_memory.TreeWatch`, and the run prints its
per-round seconds as one JSON line.

Workloads, both on seeded synthetic data (:func:`fedcare.data.synthetic.load_synthetic`, no
download) through the real site logic (:class:`~fedcare.site.app.SiteApp`) and the one round
loop, FedAvg, no evaluation rounds (``evaluate_every: 0``: fit rounds only):

* ``echo``: the model of ``kind: echo`` (:mod:`fedcare.models.echo`, 1,000,000 float32
  parameters; its ``fit`` returns the parameters it got), 4 rows per site: what fedcare itself
  costs per round for a 1M-parameter model (tasks, site checks, replies, validation and
  aggregation), the workload of the Flower 1.41 figures the issue quotes
  (:data:`FLOWER_ROUND_S`, :data:`FLOWER_PEAK_MB`).
* ``train``: logistic regression on 13 features, 64 rows per site (48 train), one local epoch
  of minibatch SGD: real local training at every site.

Backends: ``inmemory`` (sites one after another in the run's process), ``parallel`` (``N``
worker processes, :mod:`fedcare.simulation.parallel`) and ``ray`` (``N`` actors on a local Ray
instance, ``open_grid(backend="ray")``; skipped with the reason when Ray or that backend is
missing). Seconds per round: the median of the rounds' ``duration_s`` over rounds 2..R (round 1
and the workers' start are left out).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from process_memory import TreeWatch

HERE = Path(__file__).resolve().parent
BACKENDS = ("inmemory", "parallel", "ray")
#: Flower 1.41's seconds per round for the echo workload (issue 17), by number of sites.
FLOWER_ROUND_S = {10: 0.42, 100: 2.8, 1000: 57.0}
#: Flower 1.41's peak memory at 1,000 sites (issue 17), MB.
FLOWER_PEAK_MB = 8900.0
ECHO_PARAMETERS = 1_000_000
TRAIN_FEATURES, TRAIN_ROWS = 13, 64
TRAIN_TARGET_MB = 2000.0
SAMPLE_S = 0.2

Row = dict[str, Any]


@dataclass(frozen=True)
class Config:
    """One measured run: ``workload`` (``echo`` or ``train``) over ``sites`` sites."""

    workload: str
    backend: str
    sites: int
    rounds: int
    workers: int = 2

    def method(self) -> str:
        if self.backend == "inmemory":
            return "inmemory"
        unit = "actors" if self.backend == "ray" else "workers"
        return f"{self.backend} ({self.workers} {unit})"


def study_for(cfg: Config) -> Any:
    """The study of ``cfg`` (a :class:`~fedcare.records.study.StudyConfig`)."""
    from fedcare.records.study import StudyConfig

    echo = cfg.workload == "echo"
    model = {"kind": "echo", "parameters": ECHO_PARAMETERS} if echo else {"kind": "logistic"}
    training = {"epochs": 1} if echo else {"epochs": 1, "lr": 0.05, "batch_size": 16}
    return StudyConfig.model_validate(
        {
            "name": f"scale-{cfg.workload}-{cfg.sites}",
            "dataset": {"name": "synthetic", "options": {"num_sites": cfg.sites}},
            "model": model,
            "strategy": {"name": "fedavg"},
            "training": training,
            "rounds": cfg.rounds,
            "min_sites": 1,
            "seed": 0,
            "evaluate_every": 0,
            "baselines": {"local": False, "pooled": False, "cross_site": False},
        }
    )


def ray_unavailable() -> str | None:
    """Why the Ray rows cannot run here, or ``None`` when they can."""
    import importlib.util
    import inspect

    from fedcare.simulation.training import open_grid

    if "backend" not in inspect.signature(open_grid).parameters:
        return "open_grid has no backend argument yet (the Ray backend is not merged)"
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install 'fedcare[ray]')"
    return None


def run_one(cfg: Config) -> dict[str, Any]:
    """Run ``cfg`` in this process: per-round seconds and the whole run's wall time."""
    from fedcare.data.synthetic import load_synthetic
    from fedcare.simulation.training import open_grid, train_on_grid

    echo = cfg.workload == "echo"
    features, rows = (2, 4) if echo else (TRAIN_FEATURES, TRAIN_ROWS)
    ds = load_synthetic(num_sites=cfg.sites, n_features=features, rows_per_site=rows, seed=0)
    options: dict[str, Any] = {"workers": 1 if cfg.backend == "inmemory" else cfg.workers}
    if cfg.backend == "ray":  # a local Ray instance with `workers` actors
        options["backend"] = "ray"
    study = study_for(cfg)
    start = time.perf_counter()
    with open_grid(list(ds.sites), feature_names=ds.feature_names, **options) as grid:
        model = train_on_grid(grid, study, ds.sites[0].train.input_shape, label="federated")
    wall = time.perf_counter() - start
    return {"round_s": [r.duration_s for r in model.history], "wall_s": wall}


def measure(cfg: Config) -> dict[str, Any]:
    """Run ``cfg`` in a child process while sampling its process tree's memory."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    spec = json.dumps(cfg.__dict__)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", spec]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    watch = TreeWatch({"run": proc.pid})
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            watch.sample()
            done.wait(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cfg}: the run failed (exit code {proc.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["rss_mb"] = watch.total_rss_mb  # polled peak of the summed VmRSS (lower bound)
    result["hwm_mb"] = watch.sum_of_peaks_mb()  # sum of each process's own peak (upper bound)
    result["processes"] = len(watch.peak("run").processes)
    return result


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _row(dataset: str, method: str, metric: str, values: Sequence[float], unit: str) -> Row:
    return {
        "benchmark": "scale",
        "dataset": dataset,
        "method": method,
        "metric": metric,
        "mean": round(float(statistics.median(values)), 5),
        "sd": round(float(statistics.stdev(values)), 5) if len(values) > 1 else 0.0,
        "n": len(values),
        "unit": unit,
        "notes": "",
    }


def _memory_note(got: dict[str, Any]) -> str:
    return (
        f"peak RSS of the process tree ({got['processes']} processes: parent + workers) "
        f"{got['rss_mb']:,.0f} MB polled every {SAMPLE_S} s (sum of each process's own peak "
        f"{got['hwm_mb']:,.0f} MB)"
    )


def echo_rows(cfg: Config, machine: str) -> list[Row]:
    """Row ``round_s@N`` of the echo workload for ``cfg``."""
    before = _load()
    got = measure(cfg)
    timed = got["round_s"][1:]
    row = _row(
        f"synthetic (echo model: {ECHO_PARAMETERS:,} float32 parameters, no training; 4 rows "
        "per site)",
        cfg.method(),
        f"round_s@{cfg.sites}",
        timed,
        "s",
    )
    median = statistics.median(timed)
    flower = FLOWER_ROUND_S.get(cfg.sites)
    vs = f"Flower 1.41 {flower} s/round: {flower / median:.1f}x faster" if flower else ""
    if cfg.sites == 1000:
        vs += (
            f", Flower's peak {FLOWER_PEAK_MB:,.0f} MB: {FLOWER_PEAK_MB / got['rss_mb']:.1f}x less"
        )
    row["notes"] = (
        f"median of rounds 2..{cfg.rounds} (fit only, FedAvg); {vs} (target >= 10x); "
        f"{_memory_note(got)}; run wall {got['wall_s']:.1f} s; {machine}; load average "
        f"(1/5/15 min) before {before}, after {_load()}"
    )
    print(f"round_s@{cfg.sites} {cfg.method()}: {median:.3f} s; {got['rss_mb']:,.0f} MB; {vs}")
    return [row]


def train_rows(cfg: Config, machine: str) -> list[Row]:
    """Rows ``round_s@N_train`` and ``peak_rss_mb@N_train`` of the training workload."""
    before = _load()
    got = measure(cfg)
    timed = got["round_s"][1:]
    dataset = (
        f"synthetic ({TRAIN_ROWS} rows per site, {TRAIN_FEATURES} features; logistic "
        "regression, 1 epoch of SGD per round)"
    )
    common = (
        f"rounds 2..{cfg.rounds} (fit only, FedAvg); run wall {got['wall_s']:.1f} s; {machine}; "
        f"load average (1/5/15 min) before {before}, after {_load()}"
    )
    tag = f"@{cfg.sites}_train"
    time_row = _row(dataset, cfg.method(), f"round_s{tag}", timed, "s")
    time_row["notes"] = f"median of {common}; {_memory_note(got)}"
    mem_row = _row(dataset, cfg.method(), f"peak_rss_mb{tag}", [got["rss_mb"]], "MB")
    met = "MET" if got["rss_mb"] <= TRAIN_TARGET_MB else "MISSED"
    mem_row["notes"] = f"{met} (target <= {TRAIN_TARGET_MB:,.0f} MB); {_memory_note(got)}; {common}"
    print(
        f"round_s{tag} {cfg.method()}: {statistics.median(timed):.3f} s; "
        f"peak {got['rss_mb']:,.0f} MB ({met})"
    )
    return [time_row, mem_row]


def site_rows(
    part: str,
    sites: Sequence[int],
    backends: Sequence[str],
    rounds: int,
    machine: str,
    workers: int = 2,
) -> list[Row]:
    """Rows of ``part`` (``round`` or ``train1000``) for each backend and number of sites; Ray
    is skipped with a printed reason when it cannot run here."""
    rows: list[Row] = []
    why_not_ray = ray_unavailable() if "ray" in backends else None
    for backend in backends:
        if backend == "ray" and why_not_ray is not None:
            print(f"skipping the ray rows of part {part}: {why_not_ray}")
            continue
        for n in sites:
            if part == "round":
                rows += echo_rows(Config("echo", backend, n, rounds, workers), machine)
            else:
                rows += train_rows(Config("train", backend, n, rounds, workers), machine)
    return rows


def _child(spec: str) -> int:
    cfg = Config(**json.loads(spec))
    print(json.dumps(run_one(cfg)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--one":
        raise SystemExit("usage: scale_sites.py --one '<config as JSON>' (scale.py runs it)")
    raise SystemExit(_child(sys.argv[2]))
