"""The README's main job: `fedcare demo` runs a real federation and trains the simulation's model.

Real processes (a coordinator and 4 site agents over mutual TLS, each site approving the plan),
a short study (3 rounds): the model it writes must be the very model `fedcare simulate` trains
for the same study, bit for bit (same model hash), and every site's audit log must verify.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.cli.demo import EXAMPLE
from fedcare.cli.main import app
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation

from ..conftest import require_mirror

pytestmark = pytest.mark.slow


def test_demo_trains_the_simulated_model_over_a_real_federation(tmp_path: Path) -> None:
    require_mirror()
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "fedcare", "demo", "--rounds", "3", "--out", str(out)],
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
