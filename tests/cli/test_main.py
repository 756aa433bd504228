import json
from pathlib import Path

from typer.testing import CliRunner

from fedcare.cli.main import app

from ..conftest import require_mirror

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def test_simulate_writes_strict_json_and_a_report(tmp_path: Path) -> None:
    require_mirror()
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["simulate", str(EXAMPLES / "heart-disease.yaml"), "--out", str(out), "--rounds", "3"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())  # strict JSON: NaN written as null
    assert data["study"]["rounds"] == 3 and len(data["history"]) == 3
    html = (out / "report.html").read_text()
    assert "heart-disease-fedavg" in html and html.count("Plotly.newPlot") >= 3


def test_overrides_and_example_by_dataset_name(tmp_path: Path) -> None:
    require_mirror()
    result = runner.invoke(
        app,
        [
            "simulate",
            "--dataset",
            "heart-disease",
            "--strategy",
            "fedyogi",
            "--seed",
            "4",
            "--rounds",
            "2",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["study"]["strategy"] == "fedyogi" and data["study"]["seed"] == 4


def test_a_bad_study_file_exits_non_zero_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndataset: {name: heart-disease}\nmodel: {kind: logistic}\nrounds: 0\n")
    result = runner.invoke(app, ["simulate", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "rounds" in result.output and "greater than or equal to 1" in result.output
    missing = runner.invoke(app, ["simulate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "cannot read study file" in missing.output
    unknown = runner.invoke(
        app,
        [
            "simulate",
            "--dataset",
            "heart-disease",
            "--strategy",
            "fedsgd",
            "--rounds",
            "1",
            "--out",
            str(tmp_path / "o2"),
        ],
    )
    assert unknown.exit_code == 2 and "unknown strategy 'fedsgd'" in unknown.output


def test_simulate_workers_must_be_at_least_one(tmp_path: Path) -> None:
    study = str(EXAMPLES / "heart-disease.yaml")
    result = runner.invoke(app, ["simulate", study, "--out", str(tmp_path), "--workers", "0"])
    assert result.exit_code == 2
    assert "--workers must be at least 1, got 0" in result.output
    assert not (tmp_path / "results.json").exists()


def test_simulate_with_two_workers_writes_the_sequential_model(tmp_path: Path) -> None:
    require_mirror()
    study = str(EXAMPLES / "heart-disease.yaml")
    hashes = []
    for workers in ("1", "2"):
        out = tmp_path / workers
        args = ["simulate", study, "--out", str(out), "--rounds", "2", "--workers", workers]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        hashes.append(json.loads((out / "results.json").read_text())["model_card"]["model"]["hash"])
    assert hashes[0] == hashes[1]
