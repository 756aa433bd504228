"""The issue's targets, checked against a protocol's rows, and the EXAM-style summary rows.

Each :class:`Target` names the row it is about (method and metric), what it asks, whether it is
met and the numbers behind the verdict. Nothing here trains or evaluates a model.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedcare.evaluation.summary import cross_site_matrix, exam_summary
from quality_harness import MethodRun
from quality_protocols import FLAMBY_REPOSITORY, PUBLISHED, STRATEGIES, Protocol

__all__ = ["Target", "check_targets", "exam_rows"]

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Target:
    dataset: str
    method: str
    metric: str
    description: str
    met: bool
    detail: str


def _lookup(rows: Sequence[Row]) -> dict[tuple[str, str], Row]:
    return {(r["method"], r["metric"]): r for r in rows}


def _value(row: Row | None) -> float:
    return math.nan if row is None or row["mean"] is None else float(row["mean"])


def _pm(row: Row) -> str:
    return f"{row['mean']:.4f} ± {row['sd']:.4f}"


def _flamby(protocol: Protocol, rows: Sequence[Row]) -> list[Target]:
    found = []
    by = _lookup(rows)
    for method in (*STRATEGIES, "pooled"):
        row = by.get((method, protocol.metric))
        figure = PUBLISHED[protocol.key].get(method)
        if row is None or figure is None:
            continue
        value, source = figure
        repo = FLAMBY_REPOSITORY.get(method)
        detail = f"{_pm(row)} vs {value:.3f} ({source})"
        if repo is not None and "repository" not in source:
            detail += f"; FLamby repository result files: {repo:.3f}"
        found.append(
            Target(
                protocol.key,
                method,
                protocol.metric,
                f"{method} >= FLamby's {value:.3f}",
                _value(row) >= value,
                detail,
            )
        )
    return found


def _heart(protocol: Protocol, rows: Sequence[Row]) -> list[Target]:
    by = _lookup(rows)
    m = protocol.metric
    fed = {s: _value(by.get((s, m))) for s in STRATEGIES if (s, m) in by}
    best = max(fed, key=lambda s: fed[s])
    fedavg, pooled = by[("fedavg", m)], by[("pooled", m)]
    gap = _value(fedavg) - _value(pooled)
    return [
        Target(
            protocol.key,
            best,
            m,
            "best federated strategy >= 0.80",
            fed[best] >= 0.80,
            f"{best} {_pm(by[(best, m)])}",
        ),
        Target(
            protocol.key,
            "fedavg",
            m,
            "FedAvg no more than 0.01 below pooled",
            gap >= -0.01,
            f"FedAvg {_pm(fedavg)}, pooled {_pm(pooled)}, difference {gap:+.4f}",
        ),
        Target(
            protocol.key,
            "fedavg",
            m,
            "|FedAvg - pooled| <= 0.01 (two-sided reading)",
            abs(gap) <= 0.01,
            f"difference {gap:+.4f}" + (" (FedAvg above pooled)" if gap > 0 else ""),
        ),
    ]


def _tcga(protocol: Protocol, rows: Sequence[Row]) -> list[Target]:
    row = _lookup(rows)[("fedavg", protocol.metric)]
    flamby = "FLamby: FedAvg 0.732 ± 0.181, FedAdam 0.815 (as quoted in the issue)"
    return [
        Target(protocol.key, "fedavg", protocol.metric, "FedAvg C-index >= 0.80",
               _value(row) >= 0.80, f"{_pm(row)}; {flamby}"),
        Target(protocol.key, "fedavg", protocol.metric, "FedAvg SD over seeds <= 0.03",
               row["sd"] is not None and row["sd"] <= 0.03, f"SD {row['sd']:.4f}, n={row['n']}"),
    ]  # fmt: skip


def _eicu(protocol: Protocol, rows: Sequence[Row]) -> list[Target]:
    by = _lookup(rows)
    m = protocol.metric
    local = [_value(r) for (method, metric), r in by.items()
             if metric == m and method.startswith("local-")]  # fmt: skip
    mean_local = statistics.mean(local)
    pooled = by[("pooled", m)]
    found = []
    for method in dict.fromkeys(["fedavg", protocol.best or "fedavg"]):
        row = by[(method, m)]
        exam = by.get((method, f"{m}-exam-own-site-absolute"))
        own = f"; EXAM own-site reading: {exam['notes'].split(': ', 1)[1]}" if exam else ""
        found += [
            Target(protocol.key, method, m, f"{method} >= mean local + 0.05",
                   _value(row) >= mean_local + 0.05,
                   f"{_pm(row)} vs mean of the {len(local)} local models over all sites "
                   f"{mean_local:.4f} (+0.05 = {mean_local + 0.05:.4f}){own}"),
            Target(protocol.key, method, m, f"{method} >= pooled - 0.01",
                   _value(row) >= _value(pooled) - 0.01,
                   f"{_pm(row)} vs pooled {_pm(pooled)}"),
        ]  # fmt: skip
    return found


def _pneumonia(protocol: Protocol, rows: Sequence[Row]) -> list[Target]:
    by = _lookup(rows)
    metric = f"{protocol.metric}-holdout"
    fedavg, pooled = by[("fedavg", metric)], by[("pooled", metric)]
    gap = _value(fedavg) - _value(pooled)
    return [
        Target(protocol.key, "fedavg", metric, "FedAvg holdout AUROC within 0.02 of pooled",
               abs(gap) <= 0.02,
               f"FedAvg {_pm(fedavg)}, pooled {_pm(pooled)}, difference {gap:+.3f} "
               f"(n={fedavg['n']} seeds)"),
    ]  # fmt: skip


def check_targets(protocol: Protocol, rows: Sequence[Row]) -> list[Target]:
    """The targets that apply to ``protocol``, checked against its rows."""
    if protocol.suffix:
        return []
    checks = {
        "heart-disease-flamby": _flamby,
        "heart-disease": _heart,
        "tcga-brca": _tcga,
        "eicu": _eicu,
        "pneumoniamnist": _pneumonia,
    }
    check = checks.get(protocol.key)
    return check(protocol, rows) if check else []


def exam_rows(
    protocol: Protocol, runs: Mapping[str, Sequence[MethodRun]], sites: Sequence[str]
) -> list[dict[str, Any]]:
    """EXAM-study summary rows (own-site and generalizability gains), per seed then averaged.

    For FedAvg and the protocol's best strategy: each seed's cross-site matrix (federated,
    local and pooled models on every site's test split) goes through
    :func:`fedcare.evaluation.summary.exam_summary`.
    """
    if not protocol.exam:
        return []
    locals_ = [m for m in runs if m.startswith("local-")]
    out = []
    for fed in dict.fromkeys(["fedavg", protocol.best or "fedavg"]):
        summaries = []
        for i, run in enumerate(runs[fed]):
            cells = {"federated": run.per_site} | {m: runs[m][i].per_site for m in locals_}
            cells["pooled"] = runs["pooled"][i].per_site
            cross = cross_site_matrix(
                {m: cells[m] for m in cells},
                sites,
                lambda per_site, site: per_site.get(site, {}),
                protocol.metric,
            )
            summaries.append(exam_summary(cross))
        out += _exam_summary_rows(protocol, fed, summaries)
    return out


def _exam_summary_rows(
    protocol: Protocol, method: str, summaries: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    def stats(part: str, key: str) -> tuple[float, float]:
        values = [float(s[part][key]) for s in summaries]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.mean(values), sd

    own_local, _ = stats("own_site", "local")
    own_fed, _ = stats("own_site", "federated")
    gen_local, _ = stats("generalizability", "local")
    gen_fed, _ = stats("generalizability", "federated_all_sites")
    out = []
    for part, key, text in (
        ("own_site", "absolute", f"own site: local {own_local:.3f} -> federated {own_fed:.3f}"),
        ("own_site", "relative", "own site, relative to the local model"),
        ("generalizability", "absolute",
         f"other sites: local {gen_local:.3f} -> federated (all sites) {gen_fed:.3f}"),
        ("generalizability", "relative", "generalizability, relative to the local models"),
    ):  # fmt: skip
        mean, sd = stats(part, key)
        out.append(
            {
                "benchmark": "quality",
                "dataset": protocol.key,
                "method": method,
                "metric": f"{protocol.metric}-exam-{part.replace('_', '-')}-{key}",
                "mean": round(mean, 4),
                "sd": round(sd, 4),
                "n": len(summaries),
                "unit": protocol.metric if key == "absolute" else "fraction",
                "notes": f"EXAM summary (Dayan et al. 2021, exam_summary): {text}",
            }
        )
    return out
