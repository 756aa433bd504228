"""Study-package benchmark (issue 13): the example packages' quality, cost and isolation.

Runs the example study packages of ``examples/packages/`` through ``run_simulation`` (the
package stored by hash and loaded in-process, as ``fedcare simulate`` does) and writes
``benchmarks/results/packages.json`` (DESIGN.md rows; ``mean``/``sd`` over seeds, ``n`` seeds):

* ``pneumoniamnist``: ``resnet18-fedavg`` and ``resnet18-pooled`` (the same package trained on
  all sites' images together), ``auroc`` and ``accuracy`` on the official test split (624
  images, ``results["holdout"]``), the paired ``auroc`` gap, and the CPU and wall seconds per
  federated round (rounds 2..R; per-round evaluation off, only the final models evaluated).
  Targets: FedAvg AUROC >= 0.944 (MedMNIST v2's centralized ResNet-18 at 28x28: AUC 0.944,
  ACC 0.854) and within 0.01 of pooled.
* ``heart-disease-severity``: ``fedavg``, ``pooled`` and ``local-<site>``, ``macro_auroc`` and
  ``balanced_accuracy``, the unweighted mean over the 4 hospitals' test splits (every model
  evaluated on every hospital, as ``quality.json``).
* ``eicu-los``: ``fedavg`` and ``pooled``, ``mae`` (days; unweighted mean over the regions).
* ``isolation_overhead_s``: seconds to start a sandboxed runner and load a stored, verified
  package for a task after the first (:func:`isolation_rows`; target <= 1 s).

The defaults are the issue's settings, meant for a GPU machine (add ``--device cuda``): the
standard ResNet-18 (``--width 64``), the study's 40 rounds, 5 seeds. ``--quick`` is the reduced
configuration that finishes in about 10 minutes on 2 CPU cores: width 8, 20 rounds, 2 seeds for
the ResNet-18; the tabular studies keep their study files' settings with 3 seeds. Every row's
notes give its configuration, and rows from a reduced configuration say REDUCED.

Usage: ``python benchmarks/packages.py [--quick] [--seeds N] [--rounds R] [--width W]
[--device cuda] [--only pneumonia,heart,eicu,isolation]``
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault(
    "FEDCARE_DATA_MIRROR", str(Path(__file__).resolve().parents[2] / "shared" / "datasets")
)

import numpy as np

from fedcare.data.registry import load_dataset
from fedcare.errors import ConfigError
from fedcare.packages.store import PackageStore
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from results_file import write_rows

HERE = Path(__file__).resolve().parent
PACKAGES = HERE.parent / "examples" / "packages"
RESULTS = HERE / "results" / "packages.json"
Row = dict[str, Any]
PARTS = ("pneumonia", "heart", "eicu", "isolation")
MEDMNIST_AUROC = 0.944


@dataclass(frozen=True)
class Config:
    """What to run: the ResNet-18's width, rounds, seeds and device; the tabular seeds."""

    width: int = 64
    rounds: int = 40
    seeds: int = 5
    tabular_seeds: int = 5
    device: str = "cpu"
    reduced: bool = False

    def resnet_notes(self) -> str:
        scale = (
            "REDUCED CPU configuration (the issue's: width 64, 40 rounds, 5 seeds, on a GPU)"
            if self.reduced
            else "the issue's configuration"
        )
        return (
            f"ResNet-18 width {self.width}, {self.rounds} rounds, seeds 0..{self.seeds - 1}, "
            f"device {self.device}; 5 sites Dirichlet alpha 0.5, FedAvg, 10 Adam steps of 32 "
            f"images per site and round (lr 1e-3); {scale}; {_machine()}"
        )


def _machine() -> str:
    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load}"


def _row(
    dataset: str, method: str, metric: str, values: Sequence[float], unit: str, notes: str
) -> Row:
    vals = [float(v) for v in values]
    return {
        "benchmark": "packages",
        "dataset": dataset,
        "method": method,
        "metric": metric,
        "mean": statistics.fmean(vals) if vals else None,
        "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "n": len(vals),
        "unit": unit,
        "notes": notes,
    }


def _target(text: str, met: bool, detail: str) -> str:
    return f"target {text}: {'MET' if met else 'MISSED'} [{detail}]"


# PneumoniaMNIST with the ResNet-18 package ----------------------------------------------------
def _pneumonia_study(cfg: Config, seed: int) -> StudyConfig:
    study = StudyConfig.from_yaml(PACKAGES / "resnet18-pneumonia" / "study.yaml")
    options = {**study.model["options"], "width": cfg.width, "device": cfg.device}
    if cfg.device.startswith("cuda"):
        options["amp"] = True
    return study.with_overrides(
        model={**study.model, "options": options},
        rounds=cfg.rounds,
        seed=seed,
        evaluate_every=0,
        baselines={"local": False, "pooled": True},
    )


def _round_seconds(
    marks: list[tuple[str, float, float]], label: str
) -> tuple[list[float], list[float]]:
    """CPU and wall seconds of each of ``label``'s rounds after the first."""
    own = [(cpu, wall) for lab, cpu, wall in marks if lab == label]
    cpu = [b[0] - a[0] for a, b in itertools.pairwise(own)]
    wall = [b[1] - a[1] for a, b in itertools.pairwise(own)]
    return cpu, wall


def pneumonia_rows(cfg: Config) -> list[Row]:
    """FedAvg and pooled ResNet-18 on PneumoniaMNIST's official test split, seeds 0..N-1."""
    values: dict[tuple[str, str], list[float]] = {}
    per_round: dict[tuple[str, str], list[float]] = {}
    for seed in range(cfg.seeds):
        marks: list[tuple[str, float, float]] = []
        started = time.perf_counter()
        result = run_simulation(
            _pneumonia_study(cfg, seed),
            progress=lambda label, _rec, marks=marks: marks.append(
                (label, time.process_time(), time.perf_counter())
            ),
        )
        for label, method in (("federated", "resnet18-fedavg"), ("pooled", "resnet18-pooled")):
            holdout = result["holdout"][label]
            for metric in ("auroc", "accuracy"):
                values.setdefault((method, metric), []).append(holdout[metric])
            cpu, wall = _round_seconds(marks, label)
            per_round.setdefault((method, "cpu_s_per_round"), []).append(statistics.fmean(cpu))
            per_round.setdefault((method, "wall_s_per_round"), []).append(statistics.fmean(wall))
        fed, pooled = (result["holdout"][k]["auroc"] for k in ("federated", "pooled"))
        took = time.perf_counter() - started
        print(
            f"pneumoniamnist seed {seed}: auroc fedavg {fed:.3f}, pooled {pooled:.3f} "
            f"({took:.0f} s)"
        )
    notes = cfg.resnet_notes()
    split = "official test split (624 images)"
    rows = []
    for (method, metric), vals in values.items():
        extra = ""
        if (method, metric) == ("resnet18-fedavg", "auroc"):
            mean = statistics.fmean(vals)
            caveat = ", a reduced configuration: no verdict on the target" if cfg.reduced else ""
            extra = "; " + _target(
                f">= {MEDMNIST_AUROC} (MedMNIST v2 centralized ResNet-18 28x28)",
                mean >= MEDMNIST_AUROC,
                f"mean {mean:.3f}{caveat}",
            )
        rows.append(_row("pneumoniamnist", method, metric, vals, "", f"{split}; {notes}{extra}"))
    gaps = [
        f - p
        for f, p in zip(
            values[("resnet18-fedavg", "auroc")], values[("resnet18-pooled", "auroc")], strict=True
        )
    ]
    gap = statistics.fmean(gaps)
    rows.append(
        _row(
            "pneumoniamnist",
            "resnet18-fedavg - resnet18-pooled",
            "auroc_diff",
            gaps,
            "",
            f"paired by seed; {split}; {notes}; "
            + _target("FedAvg >= pooled - 0.01", gap >= -0.01, f"mean gap {gap:+.3f}"),
        )
    )
    for (method, metric), vals in per_round.items():
        what = (
            f"process CPU time of all {torch_threads()} torch threads (OpenMP spin-waits inflate "
            "it when other processes compete for the cores)"
            if metric.startswith("cpu")
            else "wall time"
        )
        rows.append(
            _row(
                "pneumoniamnist",
                method,
                metric,
                vals,
                "s",
                f"{what} per round, rounds 2..R, mean per seed; {notes}",
            )
        )
    return rows


def torch_threads() -> int:
    """Threads torch computes with in this process."""
    import torch

    return int(torch.get_num_threads())


# Tabular studies: heart-disease severity, eICU length of stay ---------------------------------
def _tabular(
    package: str, seeds: int, read: Callable[[Any], dict[tuple[str, str], float]]
) -> dict[tuple[str, str], list[float]] | str:
    """``read(result)`` for seeds 0..N-1 of ``package``'s study, or why it cannot run."""
    study = StudyConfig.from_yaml(PACKAGES / package / "study.yaml")
    values: dict[tuple[str, str], list[float]] = {}
    for seed in range(seeds):
        try:
            result = run_simulation(study.with_overrides(seed=seed))
        except ConfigError as err:
            return f"{package}: {err}"
        for key, value in read(result).items():
            values.setdefault(key, []).append(value)
    return values


def heart_rows(seeds: int) -> list[Row]:
    """5-class heart-disease severity: FedAvg, pooled and each hospital alone."""
    metrics = ("macro_auroc", "balanced_accuracy")

    def read(result: Any) -> dict[tuple[str, str], float]:
        out = {("fedavg", m): result["final"]["unweighted"][m] for m in metrics}
        out.update({("pooled", m): result["baselines"]["pooled"]["unweighted"][m] for m in metrics})
        for site, entry in result["baselines"]["local"].items():
            out.update({(f"local-{site}", m): entry["unweighted"][m] for m in metrics})
        return out

    values = _tabular("heart-severity-sklearn", seeds, read)
    if isinstance(values, str):
        print(f"skipped heart-disease-severity: {values}")
        return []
    study = StudyConfig.from_yaml(PACKAGES / "heart-severity-sklearn" / "study.yaml")
    notes = (
        f"unweighted mean over the 4 hospitals' test splits; package heart-severity-sklearn "
        f"{study.model['options']}; {study.rounds} rounds; seeds 0..{seeds - 1}; {_machine()}"
    )
    if all(len(set(v)) == 1 for v in values.values()):
        notes += "; every seed gave the same model (L-BFGS from a zero start draws nothing)"
    return [_row("heart-disease-severity", m, k, v, "", notes) for (m, k), v in values.items()]


def eicu_rows(seeds: int) -> list[Row]:
    """ICU length of stay (days) in the eICU demo: FedAvg and pooled MAE."""

    def read(result: Any) -> dict[tuple[str, str], float]:
        return {
            ("fedavg", "mae"): result["final"]["unweighted"]["mae"],
            ("pooled", "mae"): result["baselines"]["pooled"]["unweighted"]["mae"],
        }

    values = _tabular("eicu-los-mlp", seeds, read)
    if isinstance(values, str):
        print(f"skipped eicu-los: {values}")
        return []
    study = StudyConfig.from_yaml(PACKAGES / "eicu-los-mlp" / "study.yaml")
    notes = (
        f"days; unweighted mean over the 4 regions' test splits; package eicu-los-mlp "
        f"{study.model['options']}; {study.rounds} rounds; seeds 0..{seeds - 1}; {_machine()}"
    )
    rows = [_row("eicu-los", m, k, v, "days", notes) for (m, k), v in values.items()]
    return [*rows, _median_row(study)]


def _median_row(study: StudyConfig) -> Row:
    """Reference: every stay predicted as the median stay of all training rows (no features)."""
    ds = load_dataset(study.dataset.name, **study.dataset.options)
    median = float(np.median(np.concatenate([s.train.y for s in ds.sites])))
    maes = [float(np.mean(np.abs(s.test.y - median))) for s in ds.sites]
    notes = (
        f"reference without features: the pooled training median ({median:.2f} days) for "
        "every stay; unweighted mean over the 4 regions' test splits"
    )
    return _row("eicu-los", "train-median", "mae", [statistics.fmean(maes)], "days", notes)


# Isolation ------------------------------------------------------------------------------------
def isolation_rows(repeats: int = 5) -> list[Row]:
    """ISOLATION OVERHEAD: seconds to start a sandboxed runner for a task after the first.

    Measured by the sandboxed package runner's own ``measure_start_overhead``
    (:mod:`fedcare.models.sandboxed_packages`): the package already stored and verified, one
    runner started first (warm caches), then ``repeats`` fresh runners, each started and the
    package imported. Skipped, saying why, where that runner is not in this tree.
    """
    try:
        from fedcare.models.sandboxed_packages import measure_start_overhead
    except ImportError as err:
        print(f"skipped isolation_overhead_s: the sandboxed package runner is not here ({err})")
        return []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = PackageStore(Path(tmp))
        cases = (
            ("numpy-logistic", {}, (13,)),
            ("resnet18-pneumonia", {"width": 8}, (1, 28, 28)),
        )
        for package, options, shape in cases:
            ref = store.add_folder(PACKAGES / package)
            got = measure_start_overhead(
                store, ref, options=options, repeats=repeats, input_shape=shape, baseline=True
            )
            median = got["isolation_overhead_s"]
            notes = (
                f"median (in 'mean') of {repeats} runner starts after a first (a fresh runner: "
                f"the package imported, its torch too); isolation {got['isolation']}; runs: "
                f"{', '.join(f'{s:.3f}' for s in got['samples_s'])} s; the same runner "
                f"unsandboxed: {got['baseline_s']:.3f} s; a task reusing its package's running "
                f"runner (the usual case: a runner lives as long as the site's worker) pays one "
                f"call, {1000 * got['call_s']:.1f} ms (init_params round trip); {_machine()}; "
                + _target("<= 1 s", median <= 1.0, f"median {median:.3f} s")
            )
            rows.append(
                {
                    **_row(
                        f"{package} package",
                        "sandboxed runner",
                        "isolation_overhead_s",
                        got["samples_s"],
                        "s",
                        notes,
                    ),
                    "mean": median,
                }
            )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced CPU configuration (~10 min)")
    parser.add_argument("--seeds", type=int, help="ResNet-18 seeds (default 5; --quick 2)")
    parser.add_argument("--rounds", type=int, help="ResNet-18 rounds (default 40; --quick 20)")
    parser.add_argument("--width", type=int, help="ResNet-18 width (default 64; --quick 8)")
    parser.add_argument("--tabular-seeds", type=int, help="heart/eICU seeds (default 5; --quick 3)")
    parser.add_argument("--device", default="cpu", help="torch device for the ResNet-18")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated of {PARTS}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    full = Config()
    base = Config(width=8, rounds=20, seeds=2, tabular_seeds=3) if args.quick else full
    cfg = Config(
        width=args.width or base.width,
        rounds=args.rounds or base.rounds,
        seeds=args.seeds or base.seeds,
        tabular_seeds=args.tabular_seeds or base.tabular_seeds,
        device=args.device,
    )
    reduced = (cfg.width, cfg.rounds, cfg.seeds) != (full.width, full.rounds, full.seeds)
    cfg = dataclasses.replace(cfg, reduced=reduced)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--only: unknown part(s) {unknown}; valid: {list(PARTS)}")
    started = time.perf_counter()
    rows: list[Row] = []
    if "pneumonia" in parts:
        rows += pneumonia_rows(cfg)
    if "heart" in parts:
        rows += heart_rows(cfg.tabular_seeds)
    if "eicu" in parts:
        rows += eicu_rows(cfg.tabular_seeds)
    if "isolation" in parts:
        rows += isolation_rows()
    for row in rows:
        name = f"{row['dataset']:>24} {row['method']:>34} {row['metric']:>20}"
        print(f"{name} {row['mean']:.4f} ± {row['sd']:.4f}")
    print(f"total {time.perf_counter() - started:.0f} s")
    write_rows(rows, args.out)


if __name__ == "__main__":
    main()
