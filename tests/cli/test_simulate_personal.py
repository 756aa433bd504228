"""``fedcare simulate`` on a personalization study: the block in results.json, a row printed."""

import json
from pathlib import Path

from typer.testing import CliRunner

from fedcare.cli.main import app

from ..conftest import require_mirror

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "heart-disease-flamby-ditto.yaml"


def test_simulate_reports_each_sites_personal_model(tmp_path: Path) -> None:
    require_mirror()
    result = CliRunner().invoke(
        app, ["simulate", str(EXAMPLE), "--out", str(tmp_path), "--rounds", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "personal-ditto" in result.output
    block = json.loads((tmp_path / "results.json").read_text())["personalization"]
    assert block["method"] == "ditto"
    assert sorted(block["sites"]) == ["cleveland", "hungary", "switzerland", "va"]
    for entry in block["sites"].values():
        assert set(entry) == {"global", "personal", "local"}
        assert 0.0 <= entry["personal"]["accuracy"] <= 1.0
    assert set(block["mean"]) == {"global", "personal", "local"}
