import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.data.cdm.fixtures import fixture_federation

from ..conftest import require_mirror

CDM = Path(__file__).resolve().parents[2] / "examples" / "cdm"
FIXTURE = CDM / "fixture"
runner = CliRunner()


def _csv(tmp_path: Path, site: str = "south", *, broken: bool = False) -> Path:
    table = fixture_federation(np.random.default_rng(2), rows_per_site=100)[site]
    if broken:
        table.loc[:40, "age"] = "?"
    path = tmp_path / f"{site}.csv"
    table.to_csv(path, index=False)
    return path


def _check(schema: Path, mapping: Path, data: Path, *extra: str):
    args = [
        "data",
        "check",
        "--schema",
        str(schema),
        "--mapping",
        str(mapping),
        "--data",
        str(data),
    ]
    return runner.invoke(app, [*args, *extra])


def test_check_passes_and_writes_the_report_and_the_shareable_counts(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = _check(
        FIXTURE / "schema.yaml", FIXTURE / "sites" / "south.yaml", _csv(tmp_path), "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert "data check passed: 100 rows, 5 variables" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["variables"]["sex"]["unmapped_codes"] == {"U": 1}
    shared = json.loads((out / "shareable.json").read_text())
    assert shared["variables"]["sex"]["unmapped"] == "<5" and "problems" not in shared
    assert "| glucose | float | mmol/L |" in (out / "report.md").read_text()
    assert (out / "report.html").read_text().startswith("<!doctype html>")


def test_check_fails_with_exit_1_and_the_reason(tmp_path: Path) -> None:
    result = _check(
        FIXTURE / "schema.yaml", FIXTURE / "sites" / "south.yaml", _csv(tmp_path, broken=True)
    )
    assert result.exit_code == 1, result.output
    assert "data check failed: required variable 'age': more than 30% missing" in result.output


def test_a_bad_mapping_exits_2_naming_file_and_variable(tmp_path: Path) -> None:
    mapping = tmp_path / "bern.yaml"
    text = (FIXTURE / "sites" / "south.yaml").read_text().replace("unit: mg/dL", "unit: mg/dl")
    mapping.write_text(text, encoding="utf-8")
    result = _check(FIXTURE / "schema.yaml", mapping, _csv(tmp_path))
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert f"mapping {mapping}: variable 'glucose': unit 'mg/dl' has no conversion to" in flat


def test_data_as_a_loader_source_yaml(tmp_path: Path) -> None:
    _csv(tmp_path, "east")
    source = tmp_path / "source.yaml"
    source.write_text("kind: csv\npath: east.csv\n", encoding="utf-8")
    result = _check(FIXTURE / "schema.yaml", FIXTURE / "sites" / "east.yaml", source)
    assert result.exit_code == 0, result.output
    assert "data check passed: 100 rows" in result.output


def test_real_heart_disease_file_with_its_hospital_mapping() -> None:
    mirror = require_mirror()
    result = _check(
        CDM / "heart-disease" / "schema.yaml",
        CDM / "heart-disease" / "sites" / "va.yaml",
        mirror / "heart_disease" / "processed.va.data",
    )
    assert result.exit_code == 0, result.output
    assert "data check passed: 200 rows, 11 variables" in result.output
    assert "56/200" in result.output  # chol: 49 zeros + 7 "?"


def test_fixture_writes_site_tables_that_the_example_mappings_check(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["data", "fixture", "--out", str(tmp_path), "--seed", "3", "--rows", "80"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == [
        "east.csv", "north.csv", "south.csv", "west.csv"
    ]  # fmt: skip
    for site in ("north", "east"):
        check = _check(
            FIXTURE / "schema.yaml", FIXTURE / "sites" / f"{site}.yaml", tmp_path / f"{site}.csv"
        )
        assert check.exit_code == 0, check.output
