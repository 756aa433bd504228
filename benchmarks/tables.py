"""Markdown tables from ``benchmarks/results/*.json``, written into README.md.

Reads the rows the benchmarks wrote (``quality.json``, ``simulation_speed.json``,
``tuning.json``, ``clinical.json``, ``repeated.json``; any other file except ``system.json``,
which the README describes by hand, is rendered generically: one table per dataset, methods
down, metrics across, and the targets its notes name), renders them as Markdown and replaces the
text between ``<!-- quality table -->`` and ``<!-- /quality table -->`` in README.md.
Run it after the benchmarks: ``python benchmarks/tables.py`` (``--print`` only prints).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from quality_protocols import PROTOCOLS

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
START, END = "<!-- quality table -->", "<!-- /quality table -->"
TARGET = re.compile(r"target (.+?): (MET|MISSED) \[(.*?)\](?=; target |$)")

Row = Mapping[str, Any]


def load(results: Path) -> dict[str, list[Row]]:
    """Rows of every ``*.json`` under ``results``, by file stem."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def _num(value: float) -> str:
    """3 decimals; large numbers with thousands separators, tiny ones in 2 significant digits."""
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    if value != 0 and abs(value) < 0.001:
        return f"{value:.2g}"
    return f"{value:.3f}"


def _cell(row: Row, show_n: bool) -> str:
    if row["mean"] is None:
        return "n/a"
    text = f"{_num(row['mean'])} ± {_num(row['sd'])}"
    return f"{text} (n={row['n']})" if show_n else text


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, body)]


_EXAM = "EXAM-style summary (federated vs local models)"
_EXAM_TEXT = (
    "Own site: the federated model minus each site's local model on that site's test split; "
    "generalizability: the federated model on all sites minus each local model on the other "
    "sites (`fedcare.evaluation.summary.exam_summary`, Dayan et al. 2021); absolute AUROC and "
    "relative to the local models."
)


def _variant(metric: str) -> str:
    if "-exam-" in metric:
        return _EXAM
    return metric.split("@", 1)[1] + " split" if "@" in metric else ""


def _description(dataset: str, variant: str) -> str:
    if variant == _EXAM:
        return _EXAM_TEXT
    suffix = "@" + variant.removesuffix(" split") if variant else ""
    found = [p.description for p in PROTOCOLS if (p.key, p.suffix) == (dataset, suffix)]
    return found[0] if found else ""


def pivot(rows: Sequence[Row]) -> list[str]:
    """Methods down, metrics across; ``n`` in the caption when it is the same everywhere."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    ns = {r["n"] for r in rows}
    cells = {(r["method"], r["metric"]): _cell(r, len(ns) > 1) for r in rows}
    body = [[m] + [cells.get((m, k), "") for k in metrics] for m in methods]
    caption = (
        f"mean ± SD over repetitions (seeds, runs or replicates; n = {ns.pop()})"
        if len(ns) == 1
        else "mean ± SD over repetitions (seeds, runs or replicates)"
    )
    return [caption, "", *_table(["method", *metrics], body)]


def _targets(rows: Sequence[Row]) -> list[str]:
    found = [
        (r["dataset"], r["method"], *m.groups()) for r in rows for m in TARGET.finditer(r["notes"])
    ]
    if not found:
        return []
    body = [list(t) for t in dict.fromkeys(found)]
    header = ["dataset", "method", "target", "result", "numbers"]
    return ["**Targets**:", "", *_table(header, body), ""]


def generic(rows: Sequence[Row]) -> list[str]:
    """One pivot table per dataset, then the targets named in the notes. Rows whose metric
    starts with ``grid `` (the configurations a tuning search did not choose, kept in the JSON
    for the record) are left out: one cell per method could show only one of them."""
    out: list[str] = []
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if str(r["metric"]).startswith("grid "):
            continue
        groups[r["dataset"]].append(r)
    for dataset, group in groups.items():
        out += [f"**{dataset}**", "", *pivot(group), ""]
    return out + _targets(rows)


#: Benchmarks the README describes in sections of their own, outside the generated tables.
HAND_WRITTEN = ("system",)
TITLES = {
    "robustness": "Robust aggregation under attack (`benchmarks/robustness.py`)",
    "privacy": "Secure aggregation cost (`benchmarks/privacy.py`)",
    "privacy_dp": "Differential privacy (`benchmarks/privacy_dp.py`)",
    "privacy_he": "Homomorphic encryption (`benchmarks/privacy_he.py`)",
    "adversarial": "One site sends bad replies (`benchmarks/adversarial.py`)",
    "cli": "CLI start-up, median of fresh processes (`benchmarks/cli.py`)",
    "api": "HTTP API latency and event delay, PostgreSQL (`benchmarks/api.py`)",
    "clinical_coverage": "Coverage of the validation intervals (`benchmarks/clinical_coverage.py`)",
    "inference": "Predicting at a site and ONNX parity (`benchmarks/inference.py`)",
    "personalization": "Personalized models, FL4Health scoring (`benchmarks/personalization.py`)",
}


def quality(rows: Sequence[Row]) -> list[str]:
    out: list[str] = []
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], _variant(r["metric"]))].append(r)
    for (dataset, variant), group in groups.items():
        title = f"**{dataset}**" + (f", {variant}" if variant else "")
        out += [f"{title}: {_description(dataset, variant)}".rstrip(), "", *pivot(group), ""]
    return out + _targets(rows)


def speed(rows: Sequence[Row]) -> list[str]:
    body = [[r["dataset"], r["method"], r["metric"], _cell(r, True), r["notes"]] for r in rows]
    return [*_table(["dataset", "method", "measure", "value (s)", "notes"], body), ""]


def tuning(rows: Sequence[Row]) -> list[str]:
    """The chosen configuration of each (dataset, method); notes: ``CHOSEN loss X {config}``."""
    body = []
    for r in rows:
        if r["notes"].startswith("CHOSEN"):
            _, _, loss, config = r["notes"].split(" ", 3)
            body.append([r["dataset"], r["method"], config, loss, _cell(r, True), r["metric"]])
    header = ["dataset", "method", "chosen settings", "validation loss", "score", "measure"]
    return [*_table(header, body), ""]


def _interval_cell(row: Row) -> str:
    if row["mean"] is None:
        return "n/a"
    if row.get("lo") is not None and row.get("hi") is not None:
        return f"{row['mean']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}]"
    return f"{row['mean']:.3f} ± {row['sd']:.3f}"


def clinical(rows: Sequence[Row]) -> list[str]:
    """Per dataset: AUROC on each held-out site by method, then the leave-one-site-out model's
    accuracy and calibration (rows with ``site``, ``lo``, ``hi``: ``benchmarks/clinical.py``)."""
    out: list[str] = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        group = [r for r in rows if r["dataset"] == dataset and r.get("site")]
        if not group:
            continue
        sites = list(dict.fromkeys(r["site"] for r in group))
        methods = list(dict.fromkeys(r["method"] for r in group))
        cells = {(r["site"], r["method"], r["metric"]): _interval_cell(r) for r in group}
        ns = sorted({r["n"] for r in group})
        head = group[0]["notes"].split("; ")[0]
        out += [f"**{dataset}** ({head}): AUROC on each site's test split [95% interval]", ""]
        body = [[s] + [cells.get((s, m, "auroc"), "") for m in methods] for s in sites]
        out += [*_table(["held-out site", *methods], body), ""]
        metrics = ["accuracy", "no_information_rate", "calibration_slope", "ece"]
        body = [[s] + [cells.get((s, "leave-one-site-out", k), "") for k in metrics] for s in sites]
        if any(any(c for c in b[1:]) for b in body):
            out += [f"**{dataset}**, leave-one-site-out model on the held-out site", ""]
            out += [*_table(["held-out site", *metrics], body), ""]
        out += [
            f"mean over training seeds (n = {', '.join(map(str, ns))}; the split is fixed); "
            "[interval]: the site's bootstrap (AUROC, accuracy) or Wald (slope) 95% interval, "
            "or the random-effects interval; ± SD over seeds where there is none.",
            "",
        ]
    return out


def _one_run_cell(row: Row) -> str:
    return f"{row['mean']:.3f}" if row["n"] == 1 else _interval_cell(row)


_CLOSE = re.compile(r"\|difference\| <= 0\.01 in (\d+ of \d+) splits")


def repeated(rows: Sequence[Row]) -> list[str]:
    """Per dataset: each method's mean [95% interval] by metric, then the paired differences
    (``benchmarks/repeated.py``: rows with ``lo``/``hi``; differences are methods ``a - b``)."""
    out: list[str] = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        group = [r for r in rows if r["dataset"] == dataset]
        metrics = list(dict.fromkeys(r["metric"] for r in group))
        cells = {(r["method"], r["metric"]): _interval_cell(r) for r in group}
        plain = [m for m in dict.fromkeys(r["method"] for r in group) if " - " not in m]
        pairs = [m for m in dict.fromkeys(r["method"] for r in group) if " - " in m]
        ns = sorted({r["n"] for r in group if " - " not in r["method"]})
        caption = group[0]["notes"].split("; ")[0]
        out += [f"**{dataset}** ({caption}): mean [95% interval]", ""]
        if dataset == "tcga-brca":
            body = [[r["method"], _one_run_cell(r), r["notes"]] for r in group]
            out += [*_table(["method", "C-index", "notes"], body), ""]
            continue
        body = [[m] + [cells.get((m, k), "") for k in metrics] for m in plain]
        out += [*_table(["method", *metrics], body), ""]
        close = {
            (r["method"], r["metric"]): found.group(1)
            for r in group
            if (found := _CLOSE.search(r["notes"]))
        }
        body = [
            [m]
            + [cells.get((m, k), "") for k in metrics]
            + [close.get((m, metrics[0]), "")]
        for m in pairs
        ]  # fmt: skip
        header = ["paired difference", *metrics, f"splits within 0.01 ({metrics[0]})"]
        out += [*_table(header, body), ""]
        out += [f"n = {', '.join(map(str, ns))} splits.", ""]
    return out


def render(results: Path) -> str:
    files = load(results)
    out: list[str] = []
    if "quality" in files:
        out += ["### Quality (`benchmarks/quality.py`)", "", *quality(files["quality"])]
    if "simulation_speed" in files:
        out += [
            "### Speed (`benchmarks/simulation_speed.py`)",
            "",
            *speed(files["simulation_speed"]),
        ]
    if "tuning" in files:
        out += [
            "### Hyper-parameters chosen on validation data (`benchmarks/tuning.py`)",
            "",
            *tuning(files["tuning"]),
        ]
    if "clinical" in files:
        out += [
            "### External validation, leave-one-site-out (`benchmarks/clinical.py`)",
            "",
            *clinical(files["clinical"]),
        ]
    if "repeated" in files:
        out += [
            "### Repeated splits with 95% intervals (`benchmarks/repeated.py`)",
            "",
            *repeated(files["repeated"]),
        ]
    for name, rows in files.items():
        done = ("quality", "simulation_speed", "tuning", "clinical", "repeated")
        if name not in (*done, *HAND_WRITTEN):
            out += [f"### {TITLES.get(name, name)}", "", *generic(rows)]
    return "\n".join(out).rstrip() + "\n"


def update_readme(readme: Path, text: str) -> None:
    """Replace what lies between the markers of ``readme`` with ``text``."""
    content = readme.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"{readme} lacks the markers {START} ... {END}")
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{text}{END}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--print", action="store_true", help="print only, leave README alone")
    args = parser.parse_args(argv)
    text = render(args.results)
    if args.print:
        print(text)
    else:
        update_readme(args.readme, text)
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
