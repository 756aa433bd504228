"""The repeated-split tables of ``tables.py`` (``benchmarks/results/repeated.json``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from quality_protocols import PROTOCOLS
from tables_format import Row, interval_cell, one_run_cell, table

__all__ = ["repeated"]

_OUTCOMES = re.compile(r"; (sites whose test rows hold both outcomes[^;]*; positives [^;]*)")
_EXAM = "-exam-"
#: The EXAM figures' columns: (metric-name tail, header).
_EXAM_COLUMNS = (
    ("own-site-local", "own site: local"),
    ("own-site-federated", "own site: federated"),
    ("own-site-absolute", "own-site gain"),
    ("own-site-relative", "relative"),
    ("generalizability-local", "other sites: local"),
    ("generalizability-federated", "all sites: federated"),
    ("generalizability-absolute", "generalizability gain"),
    ("generalizability-relative", "relative"),
)
_CLOSE = re.compile(r"\|difference\| <= 0\.01 in (\d+ of \d+) splits")
_ALONE = re.compile(r"; ([^;]+?) alone \(not in the interval\): (-?[\d.]+)$")
_FIXED = "-quality-settings"
#: The first word of the methods of ``repeated_tcga.py``'s fixed-split check.
_CHECK = "flamby-split "


def _alone(row: Row) -> tuple[str, str]:
    """(the split's name, its figure) of ``quality.py``'s split, quoted in a row's notes."""
    found = _ALONE.search(row["notes"])
    return (found.group(1), f"{float(found.group(2)):.3f}") if found else ("", "")


def _repeated_methods(group: Sequence[Row], metrics: Sequence[str]) -> list[str]:
    """Methods down; each metric tuned on validation, with quality.py's settings where run,
    and on quality.py's split alone (the primary metric)."""
    cells = {(r["method"], r["metric"]): interval_cell(r) for r in group}
    alone = {(r["method"], r["metric"]): _alone(r) for r in group}
    names = [r["method"] for r in group if " - " not in r["method"]]
    plain = [m for m in dict.fromkeys(names) if not m.endswith(_FIXED)]
    fixed = any(m.endswith(_FIXED) for m in names)
    split = next((a[0] for a in alone.values() if a[0]), "")
    header = ["method", *metrics]
    if fixed:
        header += [f"{k}, quality.py's settings" for k in metrics]
    if split:
        header.append(f"{metrics[0]} on {split} alone")
    body = []
    for m in plain:
        line = [m] + [cells.get((m, k), "") for k in metrics]
        if fixed:
            line += [cells.get((m + _FIXED, k), "") for k in metrics]
        if split:
            line.append(alone.get((m, metrics[0]), ("", ""))[1])
        body.append(line)
    return table(header, body)


def repeated(rows: Sequence[Row]) -> list[str]:
    """Per dataset: each method's mean [95% interval] by metric, then the paired differences
    (``benchmarks/repeated.py``: rows with ``lo``/``hi``; differences are methods ``a - b``),
    then ``repeated_tcga.py``'s fixed-split check where it was run."""
    out: list[str] = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        group = [r for r in mine if not r["method"].startswith(_CHECK) and _EXAM not in r["metric"]]
        check = [r for r in mine if r["method"].startswith(_CHECK)]
        if group:
            out += _repeated_dataset(dataset, group)
        out += _exam([r for r in mine if _EXAM in r["metric"]])
        if check:
            head = check[0]["notes"].split("; ")[0]
            out += [f"**{dataset}**, the pooled Cox baseline on FLamby's split ({head}):", ""]
            body = [[r["method"].removeprefix(_CHECK), one_run_cell(r), r["notes"]] for r in check]
            out += [*table(["method", "C-index", "notes"], body), ""]
    return out


def _repeated_dataset(dataset: str, group: Sequence[Row]) -> list[str]:
    metrics = list(dict.fromkeys(r["metric"] for r in group))
    cells = {(r["method"], r["metric"]): interval_cell(r) for r in group}
    pairs = [m for m in dict.fromkeys(r["method"] for r in group) if " - " in m]
    ns = sorted({r["n"] for r in group if " - " not in r["method"]})
    caption = group[0]["notes"].split("; ")[0]
    found = [p.description for p in PROTOCOLS if p.key + p.suffix.replace("@", "-") == dataset]
    out = [f"**{dataset}** ({caption}): mean [95% interval]", ""]
    if found:
        out[0] = f"**{dataset}**: {found[0]} Over repeated splits ({caption}): mean [95% interval]"
    out += [*_repeated_methods(group, metrics), ""]
    close = {
        (r["method"], r["metric"]): found.group(1)
        for r in group
        if (found := _CLOSE.search(r["notes"]))
    }
    body = [
        [m] + [cells.get((m, k), "") for k in metrics] + [close.get((m, metrics[0]), "")]
        for m in pairs
    ]
    header = ["paired difference", *metrics, f"splits within 0.01 ({metrics[0]})"]
    out += [*table(header, body), ""]
    outcomes = next((m.group(1) for r in group if (m := _OUTCOMES.search(r["notes"]))), "")
    more = f" Test rows: {outcomes}." if outcomes else ""
    out += [f"n = {', '.join(map(str, ns))} splits.{more}", ""]
    return out


def _exam(group: Sequence[Row]) -> list[str]:
    """The EXAM-style summary rows (``repeated_exam.py``): method and metric down, figures
    across."""
    if not group:
        return []
    cells = {(r["method"], r["metric"]): interval_cell(r) for r in group}
    keys = dict.fromkeys((r["method"], r["metric"].split(_EXAM)[0]) for r in group)
    body = [
        [method, metric] + [cells.get((method, f"{metric}{_EXAM}{tail}"), "") for tail, _ in
                            _EXAM_COLUMNS]
        for method, metric in keys
    ]  # fmt: skip
    caption = "mean over" + group[0]["notes"].split("; mean over", 1)[1].split("; 95%")[0]
    alone = [r for r in group if r["metric"].endswith("own-site-absolute")]
    quoted = "; ".join(
        f"{r['method']} {r['metric'].split(_EXAM)[0]} {_alone(r)[1]}" for r in alone if _alone(r)[1]
    )
    split = _alone(alone[0])[0] if alone else ""
    out = [
        f"**{group[0]['dataset']}**, EXAM-style summary (Dayan et al. 2021) over the same splits "
        f"({caption}), from the stored per-site scores: federated minus local, mean [95% "
        "interval]",
        "",
        *table(["method", "metric", *(h for _, h in _EXAM_COLUMNS)], body),
        "",
    ]
    if quoted:
        out += [f"Own-site gain on {split} alone: {quoted}.", ""]
    return out
