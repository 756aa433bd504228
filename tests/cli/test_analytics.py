"""``fedcare analytics``: a simulated run writes results.json and report.html."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fedcare.cli.main import app
from tests.conftest import require_mirror

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "analytics"


def test_analytics_example_runs(tmp_path: Path) -> None:
    require_mirror()
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["analytics", str(EXAMPLES / "heart-disease.yaml"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert data["sites"] == ["cleveland", "hungary", "switzerland", "va"]
    assert data["queries"][0]["count"] == 740
    assert data["min_cell"] == {s: 5 for s in data["sites"]}
    page = (out / "report.html").read_text()
    assert "suppressed" in page and "Plotly.newPlot" in page


def test_analytics_bad_spec_exits_2_naming_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "q.yaml"
    spec.write_text(
        "dataset: heart-disease\nqueries:\n  - {type: cohort, filter: \"__import__('os')\"}\n"
    )
    result = runner.invoke(app, ["analytics", str(spec), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "queries.0.cohort.filter" in result.output
    assert not (tmp_path / "o").exists()
