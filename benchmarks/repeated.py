"""Repeated splits: heart disease, eICU, TCGA-BRCA over many splits x seeds, with 95% intervals.

``quality.py`` scores every method on one split and its SD is over training seeds only. Here
each repetition is a new train/test split of every site's rows, drawn as the dataset's own
split is drawn, and within it:

* ``heart-disease``: a stratified 66/34 split per hospital (``load_heart_disease(protocol="raw",
  split_seed=k)``); FLamby's split 43 is ``quality.py``'s.
* ``eicu``: the 4 US regions, a 70/30 split per region grouped by patient and stratified by
  outcome (``load_eicu(split="region", seed=k)``); seed 0 is ``quality.py``'s split.
* ``eicu-hospital``: the 11 hospitals with >= 20 stays, the same split per hospital
  (``load_eicu(split="hospital", seed=k)``; seed 0 is ``quality.py``'s ``@hospital`` split).
  FedAvg and SCAFFOLD only (as ``quality.py``), no quality-settings baselines; every model is
  also scored on all hospitals' test stays together (``auroc-union``), since in every split
  only 2 hospitals' test stays hold a death. Each run records per site its test rows and
  positives (``test``), which the notes summarize.
* ``tcga-brca``: the 6 regions, per region a split stratified on the event with FLamby's test
  sizes (``load_tcga_brca(split_seed=k)``); FLamby's stored split is ``quality.py``'s.

1. **Baselines tuned on validation data.** Each site's local model and the pooled model choose
   their own learning rate, training length and L2 (the dataset's ``grid``) on a validation
   share of that repetition's *training* rows (``quality_harness.validation_split``: 30% per
   site, stratified by label or event): the pooled model by the mean validation loss over
   sites, each local model by the validation loss at its own site (what a hospital alone could
   do), one tuning seed (100). No test row is read. On TCGA-BRCA, ``lifelines-tuned`` is also
   fitted (``CoxPHFitter``, penalizer chosen on the same validation rows; ``repeated_tcga.py``).
2. **Best strategy on validation data.** FedAvg, FedProx and SCAFFOLD keep the settings of
   ``tuning.json`` (``quality_protocols``); ``best-on-validation`` is, per repetition, the one
   with the lowest validation loss, scored on test.
3. **Scored on test** with training seeds 0..S-1: every method on every site's test split,
   metrics averaged unweighted over the sites where they are defined (as ``quality.py``). The
   local and pooled models are also run with ``quality.py``'s fixed settings
   (``...-quality-settings``), which is what an outsider re-running ``quality.py`` on other
   splits gets.

Intervals (``repeated_stats.py``): each repetition's figure is the mean over its training seeds;
the row's ``mean`` is the mean over splits, ``sd`` the SD over splits and ``lo``/``hi`` a
t-interval (95%, ``n - 1`` degrees of freedom) over the split-level means. Differences
(``fedavg - pooled`` ...) are paired within each split and get the same interval. The splits are
not independent samples of new patients (they re-divide the same rows), so the intervals
describe split-to-split variation of this benchmark, not the uncertainty of the population
figure; they are too narrow for that. The strategies' settings were tuned on the training rows
of ``quality.py``'s split, some of which are test rows of other splits: a small leak in their
favour.

For heart disease and eICU's regions the EXAM-style summary is computed from each run's stored
per-site scores (``repeated_exam.py``; rows ``<metric>-exam-...``).

``quality.py``'s split is run the same way and quoted in the notes, outside the intervals. Each
finished split is appended to the dataset's ``results/repeated_runs*.jsonl`` (per-split,
per-seed scores; ``--fresh`` starts that dataset over), so a run can be stopped and resumed.
``--tcga-check`` re-runs the pooled Cox check on FLamby's fixed split (``repeated_tcga.py``).

Validation rows are drawn per site stratified by label (or event), not grouped by patient: on
eICU a patient's stays can fall on both sides of the *validation* split (never of the test
split), which flatters validation losses a little but reads no test row.

Run time on 2 shared CPU cores (load 4-6): about 25 s per split for eICU and TCGA-BRCA (tuning
is most of it: 5 x 12 and 7 x 18 grid runs, one seed each), 20 to 55 s as the other processes
on the machine came and went; heart disease about 20 s per split, eICU's hospitals 10 to 24 s
(8.3 min for 31 splits x 3 seeds). Stored runs are only summarized.

Usage: ``python benchmarks/repeated.py [--dataset all|heart-disease|eicu|eicu-hospital|tcga-brca]
[--splits 30] [--seeds 3] [--fresh] [--tcga-check]``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcare.data.base import FederatedDataset
from fedcare.data.heart import SPLIT_SEED
from fedcare.data.registry import load_dataset
from quality_protocols import EICU, EICU_HOSPITAL, HEART, TCGA
from repeated_exam import exam_rows
from repeated_protocol import Spec, rows_of, runs_of
from results_file import write_rows

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "repeated.json"


def _grid(lengths: Sequence[tuple[float, int]], l2s: Sequence[float]) -> tuple[dict[str, Any], ...]:
    """Local / pooled settings searched on validation data: (lr, rounds) x L2."""
    return tuple(
        {"training": {"lr": lr, "l2": l2}, "rounds": rounds} for lr, rounds in lengths for l2 in l2s
    )


def _heart(split_seed: int | None) -> FederatedDataset:
    return load_dataset("heart-disease", protocol="raw", split_seed=split_seed)


def _eicu(split_seed: int | None) -> FederatedDataset:
    return load_dataset("eicu", split="region", seed=split_seed)


def _eicu_hospital(split_seed: int | None) -> FederatedDataset:
    return load_dataset("eicu", split="hospital", seed=split_seed)


def _tcga(split_seed: int | None) -> FederatedDataset:
    return load_dataset("tcga-brca", split_seed=split_seed)


def _lifelines(ds: FederatedDataset, val: FederatedDataset) -> Any:
    from repeated_tcga import lifelines_extra  # lifelines and pandas: only for TCGA-BRCA

    return lifelines_extra(ds, val)


_ONE_CLASS = "a site's test rows hold one class"
SPECS: dict[str, Spec] = {
    "heart-disease": Spec(
        key="heart-disease",
        protocol=HEART,
        protocol_name="HEART",
        load=_heart,
        metrics=("accuracy", "auroc"),
        # Four training lengths (lr x rounds of one epoch, SGD batch 16) x four L2 penalties.
        grid=_grid(((0.01, 20), (0.03, 20), (0.1, 20), (0.1, 100)), (0.0003, 0.003, 0.03, 0.3)),
        runs_file=HERE / "results" / "repeated_runs.jsonl",
        reference=SPLIT_SEED,
        reference_label=f"FLamby's split {SPLIT_SEED}",
        fixed_pairs=("cleveland", "hungary"),
        exam=True,
        undefined={
            "auroc": ("AUROC", _ONE_CLASS, "Switzerland's single negative row landing in training")
        },
    ),
    "eicu": Spec(
        key="eicu",
        protocol=EICU,
        protocol_name="EICU",
        load=_eicu,
        metrics=("auroc", "accuracy"),
        # Four training lengths (SGD batch 16, one epoch a round) x three L2 penalties.
        grid=_grid(((0.01, 20), (0.03, 50), (0.1, 50), (0.1, 150)), (0.003, 0.03, 0.3)),
        runs_file=HERE / "results" / "repeated_runs_eicu.jsonl",
        reference=0,
        reference_label="quality.py's split (seed 0)",
        undefined={"auroc": ("AUROC", _ONE_CLASS, "")},
        exam=True,
    ),
    "eicu-hospital": Spec(
        key="eicu-hospital",
        protocol=EICU_HOSPITAL,
        protocol_name="EICU_HOSPITAL",
        load=_eicu_hospital,
        metrics=("auroc",),
        grid=_grid(((0.01, 20), (0.03, 50), (0.1, 50), (0.1, 150)), (0.003, 0.03, 0.3)),
        runs_file=HERE / "results" / "repeated_runs_eicu-hospital.jsonl",
        reference=0,
        reference_label="quality.py's split (seed 0)",
        strategies=("fedavg", "scaffold"),
        union=True,
        quality_settings=False,
        undefined={"auroc": ("AUROC", _ONE_CLASS, "")},
    ),
    "tcga-brca": Spec(
        key="tcga-brca",
        protocol=TCGA,
        protocol_name="TCGA",
        load=_tcga,
        metrics=("cindex",),
        # Two learning rates x three lengths (epochs; SGD batch 64) x three L2 penalties.
        grid=_grid([(lr, n) for lr in (0.003, 0.03) for n in (30, 100, 300)], (0.01, 0.1, 1.0)),
        runs_file=HERE / "results" / "repeated_runs_tcga-brca.jsonl",
        reference=None,
        reference_label="FLamby's stored split",
        extra=_lifelines,
        extra_pairs=(("pooled", "lifelines-tuned"), ("fedavg", "lifelines-tuned")),
        extra_notes={
            "lifelines-tuned": "lifelines' CoxPHFitter on the pooled training rows, penalizer "
            "chosen on validation rows per split (deterministic: one fit)"
        },
        undefined={"cindex": ("C-index", "a site's test rows hold no comparable pair", "")},
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=[*SPECS, "all"], default="all")
    parser.add_argument(
        "--splits",
        type=int,
        help="split seeds 0..N-1 but the reference one (default 30)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..S-1 per split")
    parser.add_argument("--fresh", action="store_true", help="discard the dataset's stored runs")
    parser.add_argument("--tcga-check", action="store_true", help="pooled Cox on FLamby's split")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    chosen = list(SPECS) if args.dataset == "all" else [args.dataset]
    kept = json.loads(args.out.read_text()) if args.out.exists() else []
    rows: list[dict[str, Any]] = []
    for key, spec in SPECS.items():
        old = [r for r in kept if r["dataset"] == key]
        check = [r for r in old if r["method"].startswith("flamby-split")]
        if key not in chosen:
            rows += old
            continue
        if args.fresh and spec.runs_file.exists():
            spec.runs_file.unlink()
        seeds = list(range(args.seeds))
        runs = runs_of(spec, spec.split_seeds(args.splits or spec.splits), seeds)
        reference = runs_of(spec, [spec.reference], seeds)[0]
        rows += rows_of(spec, runs, reference)
        if spec.exam:
            rows += exam_rows(key, runs, spec.metrics, reference=reference,
                              reference_label=spec.reference_label)  # fmt: skip
        if key == "tcga-brca" and not args.tcga_check:
            rows += check
    if args.tcga_check:
        from repeated_tcga import tcga_rows

        rows += tcga_rows(range(5))
    for r in rows:
        ci = "" if r["lo"] is None else f" [{r['lo']:.4f}, {r['hi']:.4f}]"
        print(f"{r['dataset']:14s} {r['method']:48s} {r['metric']:9s} {r['mean']:.4f}{ci}")

    write_rows(rows, args.out)
    print(f"{(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
