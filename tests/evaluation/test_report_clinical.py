"""The clinical validation sections of the HTML report (issue 15), the flat JSON companion and
the formatting helpers.

The fixture ``data/clinical_results.json`` is a shrunk ``results.json`` of a real 5-round
heart-disease simulation (local and pooled baselines, leave-one-site-out, importance) made
with the clinical, subgroup and explanation modules of issue 15; its subgroups block is
combined from hand-made site tables (one level suppressed at one site).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fedcare.cli.output import write_outputs
from fedcare.evaluation.clinical_format import ci_html, fmt_ci, nir_flag
from fedcare.evaluation.clinical_json import clinical_summary
from fedcare.evaluation.report import _environment, render_report
from fedcare.evaluation.report_clinical import clinical_context, clinical_figures

DATA = Path(__file__).parent / "data" / "clinical_results.json"


@pytest.fixture(scope="module")
def full() -> dict[str, Any]:
    results: dict[str, Any] = json.loads(DATA.read_text())
    return results


@pytest.fixture(scope="module")
def page(full: dict[str, Any]) -> str:
    return render_report(full)


def _text(html: str) -> str:
    """The page's visible text, tags dropped and whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_fmt_ci_formats_value_and_interval() -> None:
    assert fmt_ci({"value": 0.8125, "lo": 0.7, "hi": 0.9}, 2) == "0.81 (0.70–0.90)"
    assert fmt_ci({"value": 0.8125, "lo": 0.6547, "hi": 1.0}) == "0.812 (0.655–1.000)"
    assert fmt_ci({"value": 0.5, "lo": None, "hi": None}) == "0.500"
    assert fmt_ci({"value": None, "lo": 0.1, "hi": 0.2}) == "–"
    assert fmt_ci(None) == "–"
    assert fmt_ci({"value": float("nan")}) == "–"
    assert fmt_ci({"value": 0.04, "lo": -0.31, "hi": 0.39}) == "0.040 (-0.310 to 0.390)"
    assert fmt_ci(0.25) == "0.250"
    assert str(ci_html("0.812 (0.655–1.000)")) == '0.812<br><span class="ci">(0.655–1.000)</span>'
    assert str(ci_html("<b>")) == "&lt;b&gt;"


def test_nir_flag_words_a_model_worse_than_always_predicting_disease() -> None:
    swiss = {
        "n": 16,
        "prevalence": 0.9375,
        "no_information_rate": 0.9375,
        "confusion": {"tp": 12, "fp": 0, "tn": 1, "fn": 3},
        "metrics": {"accuracy": {"value": 0.8125}},
    }
    flag = nir_flag("switzerland", swiss, "federated")
    assert flag == (
        "switzerland: accuracy 0.812 is worse than the no-information rate 0.938: the "
        "federated model is worse than always predicting the outcome (positive) (15 of 16)."
    )
    equal = {**swiss, "metrics": {"accuracy": {"value": 0.9375}}}
    assert "is no better than" in (nir_flag("s", equal) or "")
    above = {**swiss, "metrics": {"accuracy": {"value": 0.95}}}
    assert nir_flag("s", above) is None
    negative_majority = {"n": 10, "prevalence": 0.2, "no_information_rate": 0.8}
    low = {**negative_majority, "metrics": {"accuracy": {"value": 0.7}}}
    assert "always predicting no outcome (negative) (8 of 10)" in (nir_flag("s", low) or "")
    assert nir_flag("s", {"metrics": {"accuracy": {"value": 0.5}}}) is None  # no NIR known


def test_full_report_has_every_clinical_section(page: str) -> None:
    for anchor in (
        'id="clinical-validation"',
        'id="clinical-comparison"',
        'id="leave-one-site-out"',
        'id="tripod"',
        'id="fig-clinical-roc-pr"',
        'id="fig-clinical-reliability"',
        'id="fig-clinical-net-benefit"',
        'id="fig-clinical-forest"',
        'id="fig-clinical-importance"',
        'id="fig-clinical-loso"',
    ):
        assert anchor in page, anchor
    text = _text(page)
    for words in (
        "Confusion matrix at threshold 0.50",
        "Meta-analysis across sites",
        "Coefficients and odds ratios",
        "Subgroups and fairness",
        "equalized odds difference",
        "For the authors to write",
        "Filled in by fedcare",
    ):
        assert words in text, words
    # AUROC is in the learning curves beside accuracy and the loss
    assert '"text":"auroc"' in page.replace(" ", "")


def test_nir_flag_appears_for_switzerland_only(page: str, full: dict[str, Any]) -> None:
    block = re.search(r'<details[^>]*id="validation-1">(.*?)</details>', page, re.S)
    assert block is not None and "Model “federated”" in block.group(1)
    text = _text(block.group(1))
    assert (
        "switzerland: accuracy 0.812 is worse than the no-information rate 0.938: the "
        "federated model is worse than always predicting the outcome (positive) (15 of 16)."
    ) in text
    for site in ("cleveland", "hungary", "va"):
        assert f"{site}: accuracy" not in text, site
    context = clinical_context(full)
    assert context is not None
    federated = context["models"][0]
    assert federated["label"] == "federated"
    flagged = {r["name"] for r in federated["rows"] if r["below_nir"]}
    assert flagged == {"switzerland"}
    # Switzerland's own local model is worse than always predicting at Cleveland (0.462 vs 0.538)
    local = next(m for m in context["models"] if m["label"] == "local-switzerland")
    assert {r["name"] for r in local["rows"] if r["below_nir"]} >= {"cleveland"}
    # leave-one-site-out: held-out Switzerland is flagged for every model
    loso = context["loso"]
    swiss = next(r for r in loso["rows"] if r["site"] == "switzerland")
    assert all(cell["below_nir"] for cell in swiss["models"].values())


def test_intervals_are_formatted_in_the_tables(page: str) -> None:
    # Switzerland's accuracy: 13 of 16 with its bootstrap interval, a second smaller line
    assert '0.812<br><span class="ci">(0.655–1.000)</span>' in page
    # the overall AUROC (DeLong on the pooled histogram) with its interval
    assert '0.880<br><span class="ci">(0.831–0.917)</span>' in page


def test_subgroup_cells_withheld_show_less_than_min_cell(page: str, full: dict[str, Any]) -> None:
    results = copy.deepcopy(full)
    group = results["validation"]["federated"]["subgroups"]["groups"]["sex"]
    group["levels"]["0"] = {"n": None, "suppressed": True, "sites": 0, "sites_suppressed": 2}
    html = render_report(results)
    assert "<td>&lt; 5</td>" in html
    row = re.search(r'<tr class="suppressed"><td>0</td>(.*?)</tr>', html, re.S)
    assert row is not None and "&lt; 5" in row.group(1)
    assert not re.search(r"<td>0</td>\s*<td>0</td>", html)  # never shown as a zero count
    # the fixture's own withheld counts (a count under 5 combined) read "withheld", not 0
    assert "withheld" in _text(page)


def test_report_renders_placeholder_output() -> None:
    results = {
        "sites": ["a", "b"],
        "validation": {
            "federated": {
                "per_site": {
                    "a": {
                        "version": 1,
                        "task": "binary",
                        "n": 10,
                        "prevalence": 0.9,
                        "no_information_rate": 0.9,
                    },
                    "b": {"version": 1, "task": "binary", "n": 0},
                },
                "overall": {"n": 10, "sites": 2},
                "subgroups": {},
            }
        },
    }
    html = render_report(results)
    assert 'id="clinical-validation"' in html
    assert "fig-clinical" not in html  # no curve, no figure
    assert "Confusion matrix" not in html


def test_report_without_validation_has_no_clinical_section() -> None:
    html = render_report({"sites": ["a"], "final": {"per_site": {"a": {"accuracy": 0.5}}}})
    assert 'id="clinical-validation"' not in html
    assert 'id="tripod"' not in html
    assert clinical_context({}) is None
    assert clinical_figures({}) == {}


def _mutations(results: dict[str, Any]) -> list[tuple[Any, dict[str, Any]]]:
    """``(value, copy)``: copies of ``results`` with one part nulled or of the wrong type."""
    out = []
    paths = [
        ("validation", "federated", "overall"),
        ("validation", "federated", "overall", "meta"),
        ("validation", "federated", "overall", "metrics"),
        ("validation", "federated", "overall", "net_benefit"),
        ("validation", "federated", "overall", "calibration"),
        ("validation", "federated", "per_site", "switzerland", "metrics"),
        ("validation", "federated", "per_site", "switzerland", "calibration"),
        ("validation", "federated", "per_site", "va", "roc"),
        ("validation", "federated", "per_site", "va", "confusion"),
        ("validation", "federated", "subgroups", "groups"),
        ("validation", "federated", "coefficients", "rows"),
        ("validation", "federated", "importance", "rows"),
        ("leave_one_site_out", "sites", "va", "federated"),
        ("leave_one_site_out", "summary"),
        ("model_card", "tripod"),
    ]
    for path in paths:
        for value in (None, "x", [None]):
            r = copy.deepcopy(results)
            node = r
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            out.append((value, r))
    return out


def test_report_renders_with_missing_and_null_parts(full: dict[str, Any]) -> None:
    template = _environment().get_template("clinical.html.j2")
    for value, results in _mutations(full):
        context = clinical_context(results)
        html = template.render(clinical=context, clinical_figures={})
        assert context is None or 'id="clinical-validation"' in html
        if value is None:  # the figures too (slower: plotly validates every figure)
            clinical_figures(results)
    assert "</html>" in render_report(_mutations(full)[0][1])
    # all numbers null in every site summary
    r = copy.deepcopy(full)
    for summary in r["validation"]["federated"]["per_site"].values():
        for entry in summary["metrics"].values():
            entry.update(value=None, lo=None, hi=None)
        summary["no_information_rate"] = None
    assert "–" in render_report(r)


def test_text_is_escaped_everywhere(full: dict[str, Any]) -> None:
    evil = "<script>alert(1)</script>"
    r = copy.deepcopy(full)
    v = r["validation"]["federated"]
    v["per_site"][evil] = v["per_site"].pop("switzerland")
    v["subgroups"]["groups"][evil] = v["subgroups"]["groups"].pop("sex")
    v["coefficients"]["rows"][0]["name"] = evil
    v["importance"]["rows"][0]["feature"] = evil
    r["leave_one_site_out"]["sites"][evil] = r["leave_one_site_out"]["sites"].pop("va")
    r["validation"][evil] = r["validation"].pop("pooled")
    r["model_card"]["tripod"]["filled"][0]["text"] = evil
    html = render_report(r)
    assert evil not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f"{'&lt;script&gt;alert(1)&lt;/script&gt;'}: accuracy 0.812 is worse" in html


def test_clinical_summary_is_flat_with_intervals(full: dict[str, Any]) -> None:
    summary = clinical_summary(full)
    assert summary["version"] == 1
    assert set(summary["models"]) == set(full["validation"])
    swiss = summary["models"]["federated"]["sites"]["switzerland"]
    assert swiss["n"] == 16
    assert swiss["accuracy"] == pytest.approx(0.8125)
    assert swiss["accuracy_lo"] == pytest.approx(0.654688)
    assert swiss["accuracy_at_or_below_nir"] is True
    assert summary["models"]["federated"]["sites"]["cleveland"]["accuracy_at_or_below_nir"] is False
    overall = summary["models"]["federated"]["overall"]
    meta = full["validation"]["federated"]["overall"]["meta"]["calibration_slope"]
    assert overall["calibration_slope"] == pytest.approx(meta["random"])
    assert overall["calibration_slope_lo"] == pytest.approx(meta["lo"])
    auroc = full["validation"]["federated"]["overall"]["metrics"]["auroc"]
    assert overall["auroc_hi"] == pytest.approx(auroc["hi"])
    for row in summary["models"]["federated"]["sites"].values():  # flat: numbers only
        assert all(not isinstance(v, (dict, list)) for v in row.values())
    assert set(summary["leave_one_site_out"]["va"]) == {"federated", "pooled", "local"}
    assert clinical_summary({}) == {"version": 1, "models": {}, "leave_one_site_out": {}}
    json.dumps(summary, allow_nan=False)


def test_write_outputs_writes_the_clinical_companion(full: dict[str, Any], tmp_path: Path) -> None:
    write_outputs(copy.deepcopy(full), tmp_path)
    written = json.loads((tmp_path / "clinical.json").read_text())
    assert written == json.loads(json.dumps(clinical_summary(full)))
    write_outputs({"sites": []}, tmp_path / "none")
    assert not (tmp_path / "none" / "clinical.json").exists()


def test_multiclass_summary_shows_its_matrix_and_the_majority_class_flag() -> None:
    summary = {
        "version": 1,
        "task": "multiclass",
        "n": 20,
        "prevalence": [0.7, 0.2, 0.1],
        "no_information_rate": 0.7,
        "confusion": {"matrix": [[12, 1, 1], [3, 1, 0], [2, 0, 0]]},
        "metrics": {
            "accuracy": {"value": 0.65, "lo": 0.45, "hi": 0.85},
            "macro_auroc": {"value": 0.71, "lo": None, "hi": None},
        },
    }
    html = render_report({"validation": {"federated": {"per_site": {"h1": summary}}}})
    text = _text(html)
    assert "Confusion matrix: h1 (rows: true class, columns: predicted)" in text
    assert "0.70 / 0.20 / 0.10" in text
    assert (
        "h1: accuracy 0.650 is worse than the no-information rate 0.700: the federated model "
        "is worse than always predicting the majority class."
    ) in text
    assert "macro AUROC" in text


def test_clinical_figures_draw_offline_in_chromium(page: str, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no headless Chromium on this machine (.ci/run installs Debian's chromium)")
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--proxy-server=127.0.0.1:9",  # no network: every script is inline
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=5000",
        "--dump-dom",
        path.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    for name in ("roc-pr", "reliability", "net-benefit", "forest", "importance", "loso"):
        start = dom.index(f'id="fig-clinical-{name}"')
        assert 'class="main-svg"' in dom[start : start + 20000], name
