"""The issue's quality targets judged on the repeated-split figures, beside the single split.

``quality_targets.py`` checks each target on ``quality.py``'s one split (its verdicts are in
``quality.json``'s notes). Here the same targets are judged on the rows of ``repeated.py``
(``repeated.json``): met or missed on the **mean over splits**, with its 95% interval shown and
whether the interval lies wholly on one side of the threshold. Gaps between two methods use the
paired-difference rows (``fedavg - pooled`` ...), so their interval is the paired one. Targets
that ask for something the repeated runs do not measure (FLamby's own protocol, the SD over
training seeds, PneumoniaMNIST) keep their single-split verdict only.

``targets_table`` renders one line per single-split target (``tables.py``'s README targets table).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from quality_protocols import EICU
from tables_format import Row, table

__all__ = ["RepeatedTarget", "repeated_targets", "single_targets", "targets_table"]

_TARGET = re.compile(r"target (.+?): (MET|MISSED) \[(.*?)\](?=; target |$)")


@dataclass(frozen=True)
class RepeatedTarget:
    """One target on the repeated figures: ``key`` is the single-split target's text."""

    dataset: str
    key: str
    method: str
    met: bool
    figure: str
    detail: str


def _cell(r: Row) -> str:
    return f"{r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"


def _side(r: Row, threshold: float, absolute: bool = False) -> str:
    """Where the interval lies against ``threshold`` (``absolute``: against +-threshold)."""
    lo, hi = float(r["lo"]), float(r["hi"])
    if absolute:
        if -threshold <= lo and hi <= threshold:
            return "interval within it"
        return (
            "interval outside it" if lo > threshold or hi < -threshold else "interval straddles it"
        )
    if lo >= threshold:
        return "interval clears it"
    return "interval below it" if hi < threshold else "interval straddles it"


def _splits(r: Row) -> str:
    found = re.search(r"\|difference\| <= 0\.01 in (\d+ of \d+) splits", r["notes"])
    return f"; |difference| <= 0.01 in {found.group(1)} splits" if found else ""


def _heart(by: Mapping[tuple[str, str], Row]) -> list[RepeatedTarget]:
    m = "accuracy"
    best, diff = by[("best-on-validation", m)], by[("fedavg - pooled", m)]
    gap = float(diff["mean"])
    levels = f"FedAvg {_cell(by[('fedavg', m)])}, pooled {_cell(by[('pooled', m)])}"
    return [
        RepeatedTarget("heart-disease", "best federated strategy >= 0.80", "best-on-validation",
                       float(best["mean"]) >= 0.80, _cell(best), _side(best, 0.80)),
        RepeatedTarget("heart-disease", "FedAvg no more than 0.01 below pooled", "fedavg - pooled",
                       gap >= -0.01, _cell(diff),
                       f"{levels}; {_side(diff, -0.01)}{_splits(diff)}"),
        RepeatedTarget("heart-disease", "|FedAvg - pooled| <= 0.01 (two-sided reading)",
                       "fedavg - pooled", abs(gap) <= 0.01, _cell(diff),
                       f"{_side(diff, 0.01, absolute=True)}{_splits(diff)}"),
    ]  # fmt: skip


def _tcga(by: Mapping[tuple[str, str], Row]) -> list[RepeatedTarget]:
    fedavg = by[("fedavg", "cindex")]
    return [
        RepeatedTarget("tcga-brca", "FedAvg C-index >= 0.80", "fedavg",
                       float(fedavg["mean"]) >= 0.80, _cell(fedavg), _side(fedavg, 0.80)),
    ]  # fmt: skip


def _eicu(by: Mapping[tuple[str, str], Row]) -> list[RepeatedTarget]:
    m = "auroc"
    out = []
    for single, method in (("fedavg", "fedavg"), (EICU.best or "fedavg", "best-on-validation")):
        local = by.get((f"{method} - local-mean", m))
        pooled = by[(f"{method} - pooled", m)]
        own = by.get((method, f"{m}-exam-own-site-absolute"))
        exam = f"; EXAM own-site gain {_cell(own)}" if own else ""
        if local is not None:
            level = f"{method} {_cell(by[(method, m)])}, local-mean {_cell(by[('local-mean', m)])}"
            out.append(
                RepeatedTarget(
                    "eicu",
                    f"{single} >= mean local + 0.05",
                    f"{method} - local-mean",
                    float(local["mean"]) >= 0.05,
                    _cell(local),
                    f"{level}; {_side(local, 0.05)}{exam}",
                )
            )
        out.append(
            RepeatedTarget(
                "eicu",
                f"{single} >= pooled - 0.01",
                f"{method} - pooled",
                float(pooled["mean"]) >= -0.01,
                _cell(pooled),
                f"{_side(pooled, -0.01)}{_splits(pooled)}",
            )
        )
    return out


_CHECKS: dict[str, Callable[[Mapping[tuple[str, str], Row]], list[RepeatedTarget]]] = {
    "heart-disease": _heart,
    "tcga-brca": _tcga,
    "eicu": _eicu,
}


def repeated_targets(rows: Sequence[Row]) -> list[RepeatedTarget]:
    """The targets that ``repeated.json``'s rows can judge (datasets with rows only)."""
    out: list[RepeatedTarget] = []
    for dataset, check in _CHECKS.items():
        by = {(r["method"], r["metric"]): r for r in rows if r["dataset"] == dataset}
        if by:
            out += check(by)
    return out


def single_targets(rows: Sequence[Row]) -> list[tuple[str, str, str, str, str]]:
    """(dataset, method, target, MET/MISSED, numbers) named in ``quality.json``'s notes."""
    found = [
        (r["dataset"], r["method"], *m.groups()) for r in rows for m in _TARGET.finditer(r["notes"])
    ]
    return list(dict.fromkeys(found))


def targets_table(single: Sequence[Row], repeated: Sequence[Row]) -> list[str]:
    """Every single-split target with its repeated-split verdict where there is one."""
    found = {(t.dataset, t.key): t for t in repeated_targets(repeated)}
    body = []
    for dataset, method, key, verdict, numbers in single_targets(single):
        t = found.get((dataset, key))
        head = [dataset, key]
        if t is None:
            body.append([*head, "single split only", "", "", f"{verdict} ({method})", numbers])
        else:
            result = "MET" if t.met else "MISSED"
            body.append([*head, t.method, t.figure, f"{result} ({t.detail})",
                         f"{verdict} ({method})", numbers])  # fmt: skip
    header = ["dataset", "target", "repeated: figure", "mean [95% interval]", "repeated verdict",
              "single split verdict", "single-split numbers (± SD over seeds)"]  # fmt: skip
    return [*table(header, body), ""] if body else []
