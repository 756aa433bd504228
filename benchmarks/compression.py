"""Compression benchmark: bytes a round moves up and the final model's accuracy, per method.

For each update compression layer (``none``, ``fp16``, ``bf16``, ``int8``, ``topk`` at ratios
0.1 and 0.01; :mod:`fedcare.aggregation.compression`) the same study trains through the one
round loop over an in-memory grid of real site apps (site half: compress, with error feedback
for int8 and top-k; server half: decode and check). The grid records every fit reply, and each
is encoded as it would travel (``encode_reply``: the protobuf bytes on the gRPC wire, message
header, metrics and provenance included).

* **heart-disease**: ``examples/heart-disease.yaml`` (4 hospitals, logistic regression: 14
  float64 parameters, so message overhead dominates the bytes), ``--seeds`` study seeds.
* **pneumoniamnist**: ``examples/pneumoniamnist.yaml`` (5 sites, ``cnn_small``: 105,281
  float32 parameters, the example's 40 rounds; ``--pneumonia-rounds`` for fewer),
  ``--pneumonia-seeds`` study seeds (default 1: about 5 minutes on 2 shared cores; the results
  file was written with 3, about 12 minutes). The site split is the example's (its seed 0).

Rows (``benchmarks/results/compression.json``): ``bytes_per_round`` (fit replies of all sites,
mean over rounds), ``bytes_share`` (of the uncompressed run's), ``final_accuracy`` and
``final_auroc`` (weighted over the sites' test rows after the last round), and
``accuracy_change`` (the method's final accuracy minus the uncompressed one's, paired by seed).
``sd`` is over seeds (0 for one seed).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcare.data.registry import load_dataset
from fedcare.records.messages import Reply
from fedcare.records.study import StudyConfig
from fedcare.simulation.training import grid_for, train_on_grid
from fedcare.transport.codec import encode_reply
from results_file import write_rows

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
RESULTS = HERE / "results" / "compression.json"
METHODS: dict[str, dict[str, Any]] = {
    "none": {},
    "fp16": {"method": "fp16"},
    "bf16": {"method": "bf16"},
    "int8": {"method": "int8"},
    "topk-0.1": {"method": "topk", "ratio": 0.1},
    "topk-0.01": {"method": "topk", "ratio": 0.01},
}
Row = dict[str, Any]


def run_one(study: StudyConfig, ds: Any) -> dict[str, float]:
    """Train ``study`` on ``ds``'s sites; bytes per round and the final weighted metrics."""
    grid = grid_for(list(ds.sites), record=True)
    trained = train_on_grid(grid, study, ds.sites[0].train.input_shape, label="federated")
    fits = [m for m in grid.wire if isinstance(m, Reply) and m.kind == "fit"]
    final = trained.history[-1].evaluate
    assert final is not None, "the last round evaluates"
    weighted = final["weighted"]
    return {
        "bytes_per_round": sum(len(encode_reply(r)) for r in fits) / study.rounds,
        "final_accuracy": float(weighted["accuracy"]),
        "final_auroc": float(weighted["auroc"]),
    }


def _row(
    dataset: str, method: str, metric: str, values: Sequence[float], unit: str, notes: str
) -> Row:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "benchmark": "compression",
        "dataset": dataset,
        "method": method,
        "metric": metric,
        "mean": statistics.fmean(values),
        "sd": sd,
        "n": len(values),
        "unit": unit,
        "notes": notes,
    }


def bench(dataset: str, study: StudyConfig, seeds: Sequence[int], notes: str) -> list[Row]:
    ds = load_dataset(study.dataset.name, **study.dataset.options)
    runs: dict[str, list[dict[str, float]]] = {}
    for name, spec in METHODS.items():
        start = time.perf_counter()
        runs[name] = [
            run_one(study.with_overrides(seed=seed, compression=spec or {"method": "none"}), ds)
            for seed in seeds
        ]
        took = time.perf_counter() - start
        acc = statistics.fmean(r["final_accuracy"] for r in runs[name])
        print(
            f"{dataset:15s} {name:10s} {runs[name][0]['bytes_per_round']:>12,.0f} B/round  "
            f"accuracy {acc:.4f}  ({took:.1f} s)"
        )
    rows: list[Row] = []
    plain = runs["none"]
    for name, results in runs.items():

        def col(key: str, rs: list[dict[str, float]] = results) -> list[float]:
            return [r[key] for r in rs]

        rows += [
            _row(dataset, name, "bytes_per_round", col("bytes_per_round"), "bytes", notes),
            _row(
                dataset,
                name,
                "bytes_share",
                [
                    a / b
                    for a, b in zip(
                        col("bytes_per_round"), col("bytes_per_round", plain), strict=True
                    )
                ],
                "ratio",
                notes,
            ),
            _row(dataset, name, "final_accuracy", col("final_accuracy"), "fraction", notes),
            _row(dataset, name, "final_auroc", col("final_auroc"), "fraction", notes),
            _row(
                dataset,
                name,
                "accuracy_change",
                [
                    a - b
                    for a, b in zip(
                        col("final_accuracy"), col("final_accuracy", plain), strict=True
                    )
                ],
                "fraction",
                notes,
            ),
        ]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="heart-disease study seeds")
    parser.add_argument("--pneumonia-rounds", type=int, default=40)
    parser.add_argument("--pneumonia-seeds", type=int, default=1)
    parser.add_argument("--skip-pneumonia", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    no_report = {
        "baselines": {"local": False, "pooled": False, "cross_site": False},
        "validation": {"report": False},
    }
    heart = StudyConfig.from_yaml(EXAMPLES / "heart-disease.yaml").with_overrides(**no_report)
    rows = bench(
        "heart-disease",
        heart,
        range(args.seeds),
        f"examples/heart-disease.yaml ({heart.rounds} rounds, 4 hospitals, logistic, 14 float64 "
        "parameters); bytes: encoded fit replies of all sites per round; sd over study seeds",
    )
    if not args.skip_pneumonia:
        rounds = args.pneumonia_rounds
        pneu = StudyConfig.from_yaml(EXAMPLES / "pneumoniamnist.yaml").with_overrides(
            **no_report, rounds=rounds, evaluate_every=rounds
        )
        rows += bench(
            "pneumoniamnist",
            pneu,
            range(args.pneumonia_seeds),
            f"examples/pneumoniamnist.yaml for {rounds} rounds (5 sites, cnn_small, 105,281 "
            "float32 parameters); accuracy on the sites' test rows after the last round; sd "
            "over study seeds",
        )
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
