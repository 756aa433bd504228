"""A study package trains the same model deployed as in simulation (issue 13).

A real coordinator over mutual TLS and two governed hospital agents whose policies trust the
researcher and run package code sandboxed. The researcher signs the example package
(``examples/packages/numpy-logistic``); each steward approves the study file (which reviews
the archive); ``fedcare study submit`` stores it at the coordinator, which computes the
initial parameters in its own sandboxed runner; the sites fetch it by hash, verify it and
train in theirs. A simulation of the same study (the package's folder, loaded in-process)
gives the same model hash.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.data.registry import load_dataset
from fedcare.evaluation.model_card import model_hash
from fedcare.packages.archive import build_package
from fedcare.packages.sandbox import bwrap_available
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import grid_for, train_on_grid
from fedcare.transport.researchers import add_researcher
from tests.packages.conftest import EXAMPLE, load_kit

from ..conftest import require_mirror
from .helpers import (
    AgentThreads,
    final_params,
    heart_study,
    provision,
    running_coordinator,
    wait_for_status,
)
from .test_governance import audit_entries, start_agent

pytestmark = pytest.mark.slow
runner = CliRunner(env={"COLUMNS": "400"})
SITES = ("cleveland", "hungary")
BWRAP, WHY = bwrap_available()


def _cli(*args: str | Path) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.skipif(not BWRAP, reason=f"bubblewrap unavailable here: {WHY}")
def test_a_deployed_package_study_gives_the_simulations_model(tmp_path: Path) -> None:
    require_mirror()
    kits = provision(tmp_path / "federation", SITES, name="package-study")
    alice = load_kit(add_researcher(kits.root, "alice"))
    archive = build_package(
        EXAMPLE, tmp_path / "numpy-logistic.fcpkg", key=alice.key, cert=alice.cert
    )
    doc = heart_study(name="package-study", rounds=3, min_sites=2).model_dump(mode="json")
    doc["model"] = {"kind": "package", "package": archive.path.name}
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(doc))
    home = tmp_path / "home"
    for site in SITES:
        _cli(
            "site",
            "approve",
            study_file,
            "--state",
            tmp_path / "state" / site,
            "--kit",
            kits.sites[site],
        )

    with running_coordinator(kits, home, round_retries=1) as coordinator:
        agents = AgentThreads()
        policy = {"packages": {"trusted_signers": ["alice"]}, "sandbox": "require"}
        try:
            for site in SITES:
                start_agent(agents, kits, site, site, tmp_path, coordinator.port, policy=policy)
            study_id = _cli("study", "submit", study_file, "--home", home, "--queue").split()[-1]
            wait_for_status(coordinator.store, study_id, "completed", describe=agents.describe)
            deployed = final_params(coordinator.store, study_id)
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()

    study = StudyConfig.from_dict({**doc, "model": {"kind": "package", "package": str(EXAMPLE)}})
    data = load_dataset(study.dataset.name, **study.dataset.options)
    sites = [s for s in data.sites if s.site_id in SITES]
    simulated = train_on_grid(grid_for(sites), study, sites[0].train.input_shape, label="federated")
    assert model_hash(deployed) == model_hash(simulated.params)
    for site in SITES:  # each site ran the package's code sandboxed, and says so in its audit
        sent = [
            e["data"]
            for e in audit_entries(tmp_path / "state" / site)
            if e["event"] == "reply-sent"
        ]
        isolations = {d.get("package_isolation") for d in sent if d.get("kind") == "fit"}
        assert isolations and all(str(i).startswith("bwrap") for i in isolations), sent[-3:]
