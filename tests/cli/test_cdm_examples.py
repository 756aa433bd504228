"""``fedcare simulate`` and ``fedcare analytics`` on mapped data: the fixture-federation examples.

Both run from another working directory with an empty cache: the sites' raw CSVs are generated
into the cache, read back, harmonized with examples/cdm/fixture and then trained on or queried.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.data.cdm import Schema, SiteMapping, analysis_frame, check_table
from fedcare.data.cdm.fixtures import FIXTURE_SITES, fixture_federation

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()
pytestmark = pytest.mark.slow


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDCARE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _pooled_harmonized() -> pd.DataFrame:
    """The example's sites (fixture seed 0, 300 rows), harmonized here, independently."""
    schema = Schema.from_yaml(EXAMPLES / "cdm" / "fixture" / "schema.yaml")
    tables = fixture_federation(np.random.default_rng(0), rows_per_site=300)
    frames = []
    for site in FIXTURE_SITES:
        mapping = SiteMapping.from_yaml(EXAMPLES / "cdm" / "fixture" / "sites" / f"{site}.yaml")
        # through CSV text, as the example reads it
        table = tables[site].astype(str).replace({"nan": ""})
        frames.append(analysis_frame(check_table(table, schema, mapping)))
    return pd.concat(frames, ignore_index=True)


def test_simulate_trains_on_the_mapped_fixture_federation(elsewhere: Path) -> None:
    out = elsewhere / "run"
    args = ["simulate", str(EXAMPLES / "cdm-fixture.yaml"), "--out", str(out), "--rounds", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted((elsewhere / "cache" / "cdm-fixture" / "seed-0-rows-300").iterdir())
    data = json.loads((out / "results.json").read_text())
    assert sorted(data["sites"]) == sorted(FIXTURE_SITES)
    accuracy = data["final"]["unweighted"]["accuracy"]
    majority = float(_pooled_harmonized()["outcome"].astype(float).mean())
    assert accuracy > max(majority, 1 - majority) + 0.05, (accuracy, majority)
    assert (out / "report.html").stat().st_size > 1000


def test_analytics_queries_the_harmonized_fixture_tables(elsewhere: Path) -> None:
    out = elsewhere / "analytics"
    args = ["analytics", str(EXAMPLES / "analytics" / "cdm-fixture.yaml"), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert data["failures"] == {} and data["sites"] == sorted(FIXTURE_SITES)
    pooled = _pooled_harmonized()
    count, moments, hist = data["queries"][:3]
    assert count["count"] == len(pooled) == 4 * 300
    glucose = pd.to_numeric(pooled["glucose"]).dropna().to_numpy(dtype=float)
    i = moments["variables"].index("glucose")
    assert moments["count"][i] == len(glucose)
    assert moments["mean"][i] == pytest.approx(glucose.mean(), abs=1e-9)
    assert moments["variance"][i] == pytest.approx(glucose.var(ddof=1), abs=1e-9)
    expected, _ = np.histogram(glucose, bins=hist["edges"])
    released = np.asarray(hist["counts"], dtype=float)
    complete = np.asarray(hist["complete"], dtype=bool)
    np.testing.assert_allclose(released[complete], expected[complete], atol=1e-9)
    assert "Plotly.newPlot" in (out / "report.html").read_text()
