"""The analytics HTML report: figures, tables and suppressed marks."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fedcare.analytics.spec import AnalyticsSpec
from fedcare.evaluation.analytics_report import render_analytics_report, write_analytics_report
from fedcare.simulation.analytics import simulate_analytics

from ..conftest import require_mirror
from .test_report_browser import _chromium

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

RESULT = {
    "name": "demo",
    "sites": ["a", "b"],
    "min_cell": {"a": 5, "b": 5},
    "epsilon": {"a": 0.0, "b": 0.0},
    "queries": [
        {
            "path": "q0",
            "type": "count",
            "name": "patients",
            "count": 12.0,
            "per_site": {"a": 12.0, "b": None},
            "suppressed": {"b": [0]},
        },
        {
            "path": "q1",
            "type": "histogram",
            "name": "age",
            "variable": "age",
            "edges": [0, 50, 100],
            "counts": [7.0, 5.0],
            "complete": [True, False],
            "per_site": {"a": [7.0, 5.0], "b": [0.0, None]},
            "suppressed": {"b": [1]},
        },
        {
            "path": "q2",
            "type": "correlation",
            "name": "corr",
            "variables": ["x", "y"],
            "count": 10.0,
            "correlation": [[1.0, 0.5], [0.5, 1.0]],
            "suppressed": {},
        },
        {
            "path": "q3",
            "type": "kaplan_meier",
            "name": "km",
            "mode": "grid",
            "time": [1.0, 2.0],
            "survival": [0.9, 0.8],
            "events": [1.0, 1.0],
            "at_risk": [10.0, 9.0],
            "complete": [True, True],
            "per_site": {"a": [0.9, None]},
            "per_site_time": [1.0, 2.0],
            "suppressed": {"a": [1]},
        },
        {
            "path": "q4",
            "type": "cohort",
            "name": "old",
            "filter": "age >= 60 <script>",
            "count": 7.0,
            "per_site": {"a": 7.0, "b": None},
            "suppressed": {"b": [0]},
            "queries": [
                {
                    "path": "q4.0",
                    "type": "quantiles",
                    "name": "q",
                    "probabilities": [0.5],
                    "quantiles": [61.0],
                    "error_bound": [1e-9],
                    "suppressed": {},
                }
            ],
        },
    ],
}


def test_report_has_figures_and_marks_suppressed_cells(tmp_path: Path) -> None:
    path = write_analytics_report(RESULT, tmp_path / "r.html")
    page = path.read_text()
    assert page.count('class="suppressed"') == 3  # count b, bin 1 of b, cohort b
    assert "fig-q1" in page and "fig-q2" in page and "fig-q3" in page
    assert "Withheld cells" in page and "b: 1" in page
    assert "≥ 5" in page  # bin 1 is a lower bound: site b withheld it
    assert "<script>" not in page.split("age &gt;= 60", 1)[1][:20]  # the filter is escaped


def test_report_lists_failures_and_epsilon() -> None:
    page = render_analytics_report(
        {**RESULT, "failures": {"c (round 1)": "timeout"}, "epsilon": {"a": 1.5, "b": 1.5}}
    )
    assert "c (round 1): timeout" in page
    assert "DP epsilon spent" in page and "a 1.5" in page


def test_analytics_report_plots_render_offline_in_chromium(tmp_path: Path) -> None:
    require_mirror()
    browser = _chromium()
    spec = AnalyticsSpec.from_yaml(EXAMPLES / "analytics" / "tcga-brca.yaml")
    result = simulate_analytics(spec).to_dict()
    page = write_analytics_report(result, tmp_path / "report.html")
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--proxy-server=127.0.0.1:9",  # no network: plotly.js must be inline
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    assert dom.count('class="main-svg"') >= 2, dom[:2000]  # both Kaplan-Meier figures
    assert "region-0" in dom
