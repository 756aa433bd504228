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
from collections.abc import Sequence
from pathlib import Path

from quality_protocols import PROTOCOLS
from tables_format import Row, cell, interval_cell, table
from tables_repeated import repeated
from targets_repeated import targets_table

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
START, END = "<!-- quality table -->", "<!-- /quality table -->"
TARGET = re.compile(r"target (.+?): (MET|MISSED) \[(.*?)\](?=; target |$)")


def load(results: Path) -> dict[str, list[Row]]:
    """Rows of every ``*.json`` under ``results``, by file stem."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


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
    cells = {(r["method"], r["metric"]): cell(r, len(ns) > 1) for r in rows}
    body = [[m] + [cells.get((m, k), "") for k in metrics] for m in methods]
    caption = (
        f"mean ± SD over repetitions (seeds, runs or replicates; n = {ns.pop()})"
        if len(ns) == 1
        else "mean ± SD over repetitions (seeds, runs or replicates)"
    )
    return [caption, "", *table(["method", *metrics], body)]


def _targets(rows: Sequence[Row]) -> list[str]:
    found = [
        (r["dataset"], r["method"], *m.groups()) for r in rows for m in TARGET.finditer(r["notes"])
    ]
    if not found:
        return []
    body = [list(t) for t in dict.fromkeys(found)]
    header = ["dataset", "method", "target", "result", "numbers"]
    return ["**Targets**:", "", *table(header, body), ""]


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


def _covered(dataset: str, variant: str, repeated: Sequence[Row]) -> bool:
    """Whether the repeated-split rows hold this single-split table's figures: the dataset's
    main table, its EXAM summary, or a split variant (``eicu`` + ``hospital split`` is
    ``eicu-hospital``)."""
    if variant == _EXAM:
        return any(r["dataset"] == dataset and "-exam-" in r["metric"] for r in repeated)
    key = f"{dataset}-{variant.removesuffix(' split')}" if variant else dataset
    return any(r["dataset"] == key for r in repeated)


def quality(rows: Sequence[Row], repeated_rows: Sequence[Row] = ()) -> list[str]:
    """Single-split tables; a table whose figures the repeated-split tables hold becomes a
    one-line note, and the targets table shows the repeated verdicts where there are any."""
    out: list[str] = []
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], _variant(r["metric"]))].append(r)
    for (dataset, variant), group in groups.items():
        title = f"**{dataset}**" + (f", {variant}" if variant else "")
        if _covered(dataset, variant, repeated_rows):
            out += _single_split_note(title, group)
            continue
        out += [f"{title}: {_description(dataset, variant)}".rstrip(), "", *pivot(group), ""]
    if repeated_rows:
        return [*out, "**Targets**:", "", *targets_table(rows, repeated_rows)]
    return out + _targets(rows)


def speed(rows: Sequence[Row]) -> list[str]:
    body = [[r["dataset"], r["method"], r["metric"], cell(r, True), r["notes"]] for r in rows]
    return [*table(["dataset", "method", "measure", "value (s)", "notes"], body), ""]


def tuning(rows: Sequence[Row]) -> list[str]:
    """The chosen configuration of each (dataset, method); notes: ``CHOSEN loss X {config}``."""
    body = []
    for r in rows:
        if r["notes"].startswith("CHOSEN"):
            _, _, loss, config = r["notes"].split(" ", 3)
            body.append([r["dataset"], r["method"], config, loss, cell(r, True), r["metric"]])
    header = ["dataset", "method", "chosen settings", "validation loss", "score", "measure"]
    return [*table(header, body), ""]


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
        cells = {(r["site"], r["method"], r["metric"]): interval_cell(r) for r in group}
        ns = sorted({r["n"] for r in group})
        head = group[0]["notes"].split("; ")[0]
        out += [f"**{dataset}** ({head}): AUROC on each site's test split [95% interval]", ""]
        body = [[s] + [cells.get((s, m, "auroc"), "") for m in methods] for s in sites]
        out += [*table(["held-out site", *methods], body), ""]
        metrics = ["accuracy", "no_information_rate", "calibration_slope", "ece"]
        body = [[s] + [cells.get((s, "leave-one-site-out", k), "") for k in metrics] for s in sites]
        if any(any(c for c in b[1:]) for b in body):
            out += [f"**{dataset}**, leave-one-site-out model on the held-out site", ""]
            out += [*table(["held-out site", *metrics], body), ""]
        out += [
            f"mean over training seeds (n = {', '.join(map(str, ns))}; the split is fixed); "
            "[interval]: the site's bootstrap (AUROC, accuracy) or Wald (slope) 95% interval, "
            "or the random-effects interval; ± SD over seeds where there is none.",
            "",
        ]
    return out


def _single_split_note(title: str, rows: Sequence[Row]) -> list[str]:
    """One line in place of a single-split table: where the figures are."""
    primary = next((r["metric"] for r in rows), "")
    shown = [r for r in rows if r["method"] in ("fedavg", "pooled") and r["metric"] == primary]
    values = ", ".join(f"{r['method']} {cell(r, False)}" for r in shown)
    return [
        f"{title}: single-split figures in `benchmarks/results/quality.json` ({primary}, "
        f"± SD over {rows[0]['n']} training seeds on one split: {values}); quote the "
        "repeated-split table above instead.",
        "",
    ]


_SINGLE = (
    "One train/test split per dataset; ± is the SD over training seeds only, which understates "
    "how much a figure moves with the split. For heart disease, TCGA-BRCA, eICU (regions and "
    "hospitals) and the EXAM summary the repeated-split tables above are the figures to quote; "
    "FLamby's own protocol and PneumoniaMNIST are not yet run over repeated splits. The targets "
    "are judged on the repeated-split mean where a repeated figure exists (its 95% interval "
    "shown), with the single-split verdict beside it."
)


def render(results: Path) -> str:
    files = load(results)
    out: list[str] = []
    covered = files.get("repeated", [])
    if "repeated" in files:
        out += [
            "### Quality over repeated splits, 95% intervals (`benchmarks/repeated.py`)",
            "",
            *repeated(files["repeated"]),
        ]
    if "quality" in files:
        out += [
            "### Single-split figures (`benchmarks/quality.py`)",
            "",
            _SINGLE,
            "",
            *quality(files["quality"], covered),
        ]
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
