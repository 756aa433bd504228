"""The README's main job: `fedcare demo` runs a real federation and trains the simulation's model.

Real processes (a coordinator and 4 site agents over mutual TLS, each site approving the plan),
a short study (3 rounds): the model it writes must be the very model `fedcare simulate` trains
for the same study, bit for bit (same model hash), and every site's audit log must verify.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.cli.demo import EXAMPLE, HOSPITALS
from fedcare.cli.main import app
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation

from ..conftest import require_mirror

pytestmark = pytest.mark.slow


def test_demo_trains_the_simulated_model_over_a_real_federation(tmp_path: Path) -> None:
    """One demo run for both jobs (CI time): the study, then ``--full``'s deployment loop."""
    require_mirror()
    out = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedcare",
            "demo",
            "--rounds",
            "3",
            "--out",
            str(out),
            "--full",
            "--keep",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "study completed" in done.stdout + done.stderr
    results = json.loads((out / "results.json").read_text())
    assert (out / "report.html").stat().st_size > 10_000
    rounds = [r for r in results["history"] if r["round"] > 0]
    assert [r["fit"]["num_contributions"] for r in rounds] == [4, 4, 4]

    study = StudyConfig.from_yaml(EXAMPLE).with_overrides(
        rounds=3, baselines={"local": False, "pooled": False, "cross_site": False}
    )
    simulated = run_simulation(study)
    assert results["model_card"]["model"]["hash"] == simulated["model_card"]["model"]["hash"]
    assert results["final"]["unweighted"]["accuracy"] == pytest.approx(
        simulated["final"]["unweighted"]["accuracy"], abs=1e-12
    )
    assert sorted(results["model_card"]["sites"]) == sorted(results["sites"])
    kept = Path(done.stderr.split("kept ")[-1].split()[0])
    try:
        _the_loop_closed(out, kept, done.stdout, results["model_card"]["model"]["version"])
    finally:
        shutil.rmtree(kept, ignore_errors=True)


def _the_loop_closed(out: Path, root: Path, panel: str, version: str) -> None:
    """--full: each hospital took the model, scored its test rows (never trained on), got the
    outcomes back, and its monitoring summary reached the coordinator: the panel shows it."""
    from fedcare.coordinator.server import default_db_url
    from fedcare.coordinator.store import CoordinatorStore
    from fedcare.site.config import DatasetEntry

    assert "post-deployment monitoring (as the coordinator holds it)" in panel
    home = root / "coordinator"
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        held = {s: store.list_deployments(version, s)[-1] for s in HOSPITALS}
    for site, deployment in held.items():
        n_test = len(
            DatasetEntry(builtin="heart-disease", site=site, options={"protocol": "raw"})
            .load()
            .test.y
        )
        assert deployment.status == "taken", deployment
        monitoring = deployment.monitoring
        assert monitoring is not None and monitoring["site"] == site, deployment
        assert monitoring["predictions"]["n"] == n_test
        assert monitoring["outcomes"]["matched"] == n_test
        kept = json.loads((out / "deployment" / f"{site}-monitoring.json").read_text())
        assert kept == monitoring  # the coordinator holds exactly what the site wrote
        (row,) = [line for line in panel.splitlines() if f" {site} " in line]
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        assert cells[:3] == [site, str(n_test), str(n_test)], row
        perf = monitoring["performance"]
        if perf is None:  # switzerland's test rows hold too few negatives: withheld
            assert cells[3:5] == ["withheld", "withheld"], row
        else:
            assert cells[3] == f"{perf['metrics']['auroc']['value']:.3f}", row
            assert 0.7 < perf["metrics"]["auroc"]["value"] <= 1.0
            assert cells[4] == f"{perf['calibration']['slope']:.3f}", row
        top = max(monitoring["drift"]["features"].values(), key=lambda d: d["psi"])
        assert cells[5].startswith(f"{top['psi']:.3f} "), row
        assert (out / "deployment" / f"{site}-predictions.csv").is_file()
        logs = list((root / "state" / site / "models" / version / "predictions").glob("*.parquet"))
        assert len(logs) == 1, logs


@pytest.mark.parametrize("mode", ["secure", "encrypted"])
def test_demo_in_a_privacy_mode_trains_the_open_model(tmp_path: Path, mode: str) -> None:
    """Secure aggregation and CKKS change what the coordinator sees, not the model (up to the
    fixed-point and CKKS precision: 1e-6 on the test loss)."""
    require_mirror()
    if mode == "encrypted":
        pytest.importorskip("tenseal", reason="the encrypted mode needs the he extra")
    done = subprocess.run(
        [sys.executable, "-m", "fedcare", "demo", "--rounds", "2", "--privacy", mode],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "runs" / "demo" / "results.json").read_text())
    assert results["study"]["privacy"]["mode"] == mode
    study = StudyConfig.from_yaml(EXAMPLE).with_overrides(
        rounds=2, baselines={"local": False, "pooled": False, "cross_site": False}
    )
    simulated = run_simulation(study)["final"]["unweighted"]
    assert results["final"]["unweighted"]["loss"] == pytest.approx(simulated["loss"], abs=1e-6)
    assert results["final"]["unweighted"]["accuracy"] == pytest.approx(simulated["accuracy"])


def test_demo_refuses_an_unknown_privacy_mode(tmp_path: Path) -> None:
    # in-process: the refusal comes before anything starts (a subprocess only added 4 s)
    done = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["demo", "--privacy", "private", "--out", str(tmp_path / "demo")]
    )
    assert done.exit_code == 2, done.output
    assert "--privacy must be one of open, secure, encrypted" in done.output
    assert not (tmp_path / "demo").exists()
