"""Result rows of the system benchmark (``benchmarks/results/system.json``) and its table.

Each figure is one row ``{"benchmark": "system", "dataset": "synthetic", "method", "metric",
"mean", "sd", "n", "unit", "notes"}`` whose metric ends in ``@<size>`` (``round_time_s@1M``).
:func:`merge_rows` puts a run's rows into the rows already stored: a row replaces the stored
row of the same method and metric, and every other stored row stays, so a run of one size (or
of ``--resume`` alone) leaves the other sizes' figures as they were.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GridRun",
    "memory_rows",
    "merge_rows",
    "print_table",
    "ratio_row",
    "row",
    "timing_rows",
    "with_verdicts",
]

Row = dict[str, Any]
BYTES_PER_PARAM = 4  # float32


@dataclass(frozen=True)
class GridRun:
    """Round times of one run on one grid, and what else it measured.

    ``extra`` maps a metric name of :data:`EXTRA_NOTES` to its value, and ``extra_notes`` to
    what the run adds to that metric's notes (a per-process breakdown, a bound).
    """

    method: str
    durations: list[float]
    peak_rss_mb: float | None = None
    rss_what: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    status: str = "completed"
    extra_notes: dict[str, str] = field(default_factory=dict)


def row(method: str, metric: str, value: float | None, sd: float, n: int, unit: str, notes: str
        ) -> Row:  # fmt: skip
    return {
        "benchmark": "system",
        "dataset": "synthetic",
        "method": method,
        "metric": metric,
        "mean": None if value is None else round(value, 6),
        "sd": round(sd, 6),
        "n": n,
        "unit": unit,
        "notes": notes,
    }


EXTRA_NOTES = {
    "study_wall_s": ("s", "submit (or train_on_grid call) to completion, round 0 included"),
    "round_wall_s": (
        "s",
        "median gap between stored completion times of rounds 3..R: a round plus "
        "checkpointing it (params and strategy state written as artifacts)",
    ),
    "site_peak_rss_mb": (
        "MB",
        "largest peak resident memory of one site: the sum of its processes' own peaks "
        "(VmHWM of the agent, its task worker and helpers; an upper bound of the site's peak)",
    ),
    "agent_peak_rss_mb": ("MB", "largest peak resident memory (VmHWM) of one site's agent"),
    "worker_peak_rss_mb": (
        "MB",
        "largest peak resident memory of one site's task worker (VmHWM; summed over worker "
        "processes if a site started several)",
    ),
    "federation_peak_rss_mb": (
        "MB",
        "peak of the summed resident memory (VmRSS) of coordinator, agents, workers and their "
        "helpers, sampled every 0.2 s (a lower bound of the true peak)",
    ),
    "federation_peak_anon_mb": (
        "MB",
        "peak of the summed anonymous resident memory (RssAnon: heap, not file pages that "
        "memory-mapped payloads bring in), sampled every 0.2 s",
    ),
    "federation_peak_pss_mb": (
        "MB",
        "peak of the summed proportional resident memory (Pss: a page mapped by n processes, "
        "such as the shared libraries of the nine Python processes or a payload's page cache, "
        "counts 1/n in each), sampled every 0.2 s",
    ),
    "min_mem_available_mb": ("MB", "least MemAvailable of the machine during the run"),
}


def timing_rows(label: str, params: int, sites: int, run: GridRun, base: str) -> list[Row]:
    """Median round time (rounds 2..R), throughput and round 1 of one run."""
    steady = run.durations[1:]
    word, _, reason = run.status.partition(":")
    status = "" if run.status == "completed" else f"{word.upper()}:{reason}; "
    moved = sites * 2 * params * BYTES_PER_PARAM
    median = statistics.median(steady) if steady else None
    sd = statistics.stdev(steady) if len(steady) > 1 else 0.0
    every = ", ".join(f"{d:.3f}" for d in run.durations)
    if not run.durations:
        return [
            row(run.method, f"{metric}@{label}", None, 0.0, 0, unit, f"{status}{base}")
            for metric, unit in (("round_time_s", "s"), ("throughput_mb_s", "MB/s"))
        ]
    nominal = "; nominal: the in-memory grid copies nothing" if run.method == "inmemory" else ""
    grpc = run.method != "inmemory"
    workers = f" (includes starting the {sites} site task workers)" if grpc else ""
    return [
        row(run.method, f"round_time_s@{label}", median, sd, len(steady), "s",
            f"{status}median (in 'mean') of rounds 2..{len(run.durations)}; all rounds: "
            f"{every} s; {base}"),
        row(run.method, f"throughput_mb_s@{label}", median and moved / median / 1e6,
            moved * sd / median**2 / 1e6 if median else 0.0, len(steady), "MB/s",
            f"{status}{moved / 1e6:,.1f} MB per round ({sites} x (task down + update "
            f"up)) / median round time; SD by the delta method{nominal}; {base}"),
        row(run.method, f"first_round_s@{label}", run.durations[0], 0.0, 1, "s",
            f"{status}round 1 alone{workers}; {base}"),
    ]  # fmt: skip


def memory_rows(label: str, run: GridRun, base: str) -> list[Row]:
    """Peak memory and the other measurements of one run."""
    if run.peak_rss_mb is None:
        return []
    rows = [
        row(run.method, f"peak_rss_mb@{label}", run.peak_rss_mb, 0.0, 1, "MB",
            f"peak resident memory of the {run.rss_what}; {base}"),
    ]  # fmt: skip
    for key, value in run.extra.items():
        unit, note = EXTRA_NOTES[key]
        more = f"; {run.extra_notes[key]}" if key in run.extra_notes else ""
        rows.append(row(run.method, f"{key}@{label}", value, 0.0, 1, unit, f"{note}{more}; {base}"))
    return rows


def ratio_row(label: str, params: int, grpc: GridRun, inmem: GridRun) -> Row | None:
    if len(grpc.durations) < 2 or len(inmem.durations) < 2:
        return None
    g, i = statistics.median(grpc.durations[1:]), statistics.median(inmem.durations[1:])
    return row(
        "grpc", f"round_time_ratio@{label}", g / i, 0.0, 1, "x",
        f"median gRPC round time / median in-memory round time ({g:.3f} / {i:.3f} s); "
        f"{params:,} parameters",
    )  # fmt: skip


def merge_rows(stored: Sequence[Mapping[str, Any]], new: Sequence[Row]) -> list[Row]:
    """``stored`` with each row of ``new`` in place of the stored row of its method and
    metric; new keys are appended in their order."""
    fresh = {(r["method"], r["metric"]): r for r in new}
    out = [dict(fresh.pop((r["method"], r["metric"]), r)) for r in stored]
    return out + [r for r in new if (r["method"], r["metric"]) in fresh]


#: Issue 16's targets: (method, metric) -> (comparison, bound, unit).
TARGETS = {
    ("grpc", "throughput_mb_s@100M"): (">=", 300.0, "MB/s"),
    ("grpc", "federation_peak_rss_mb@100M"): ("<=", 4000.0, "MB"),
    ("grpc", "peak_rss_mb@100M"): ("<=", 1500.0, "MB"),
}


def with_verdicts(rows: Sequence[Row]) -> list[Row]:
    """``rows`` with ``; target <= B unit: MET [value]`` (or MISSED) appended to the notes of
    each row :data:`TARGETS` names (MISSED ``[not measured]`` when its value is empty)."""
    out = []
    for r in rows:
        target = TARGETS.get((r["method"], r["metric"]))
        if target is not None:
            op, bound, unit = target
            value = r["mean"]
            met = value is not None and (value >= bound if op == ">=" else value <= bound)
            shown = "not measured" if value is None else f"{value:,.1f} {unit}"
            verdict = f"target {op} {bound:,.0f} {unit}: {'MET' if met else 'MISSED'} [{shown}]"
            r = {**r, "notes": f"{r['notes']}; {verdict}"}
        out.append(r)
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(rows: Sequence[Row], labels: Sequence[str]) -> None:
    """Round times, throughput and memory per size and grid; then any resume rows."""
    cells = {(r["method"], r["metric"]): r["mean"] for r in rows}
    notes = {(r["method"], r["metric"]): r["notes"] for r in rows}
    print(f"\n{'size':>6} {'grid':>9} {'round s':>9} {'MB/s':>8} {'ratio':>6} {'round 1 s':>9} "
          f"{'coord MB':>8} {'site MB':>8} {'fed MB':>8}  status")  # fmt: skip
    for label in labels:
        for method in ("inmemory", "grpc"):
            key = (method, f"round_time_s@{label}")
            if key not in notes:
                continue
            v = {m: cells.get((method, f"{m}@{label}")) for m in (
                "round_time_s", "throughput_mb_s", "round_time_ratio", "first_round_s",
                "peak_rss_mb", "site_peak_rss_mb", "federation_peak_rss_mb")}  # fmt: skip
            status = notes[key].split("; ")[0] if notes[key][:1].isupper() else "completed"
            print(f"{label:>6} {method:>9} {_fmt(v['round_time_s'], '9.3f'):>9} "
                  f"{_fmt(v['throughput_mb_s'], '8.1f'):>8} "
                  f"{_fmt(v['round_time_ratio'], '6.1f') if method == 'grpc' else '':>6} "
                  f"{_fmt(v['first_round_s'], '9.3f'):>9} {_fmt(v['peak_rss_mb'], '8.0f'):>8} "
                  f"{_fmt(v['site_peak_rss_mb'], '8.0f'):>8} "
                  f"{_fmt(v['federation_peak_rss_mb'], '8.0f'):>8}  {status[:100]}")  # fmt: skip
    for r in rows:
        if "resume" in r["metric"]:
            print(f"{r['metric']:>34} {_fmt(r['mean'], '6.3f')}  {r['notes'][:150]}")
