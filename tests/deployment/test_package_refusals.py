"""A site refuses a study package it may not run, and the coordinator shows why (issue 13).

A real coordinator over mutual TLS and two real governed site agents. A researcher's signed
package is submitted with ``fedcare study submit``; the study's first tasks (round 0's
statistics) name it by hash, and each agent fetches it with ``FetchPackage``, verifies it and
checks its policy: ``cleveland`` trusts no signer (the default), ``hungary`` trusts the
researcher but lacks a declared dependency. Both refusals reach ``fedcare study status`` with
their reasons, and the sites' audit logs record them; no task ran on data.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.transport.researchers import add_researcher
from tests.packages.distribution import build

from ..conftest import require_mirror
from .helpers import AgentThreads, heart_study, provision, running_coordinator, wait_for_status
from .test_governance import audit_entries, start_agent

runner = CliRunner(env={"COLUMNS": "400"})


def test_untrusted_signer_and_missing_dependency_reach_study_status(tmp_path: Path) -> None:
    require_mirror()
    kits = provision(tmp_path / "federation", ("cleveland", "hungary"), name="package-refusals")
    add_researcher(kits.root, "alice")
    built = build(tmp_path, kits.root, dependencies=["numpy>=1.26,<3", "surely-absent-dist>=1"])
    doc = heart_study(name="package-study", rounds=1, min_sites=2).model_dump(mode="json")
    doc["model"] = {"kind": "package", "package": built.path.name}
    doc["preprocessing"] = {"impute": "mean", "scale": "global"}  # round 0: statistics tasks
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(doc))
    home = tmp_path / "home"
    with running_coordinator(kits, home, round_retries=1) as coordinator:
        agents = AgentThreads()
        try:
            port = coordinator.port
            states = {
                "cleveland": start_agent(agents, kits, "cleveland", "cleveland", tmp_path, port),
                "hungary": start_agent(
                    agents, kits, "hungary", "hungary", tmp_path, port,
                    policy={"packages": {"trusted_signers": ["alice"]}},
                ),
            }  # fmt: skip
            submitted = runner.invoke(
                app, ["study", "submit", str(study_file), "--home", str(home), "--queue"]
            )
            assert submitted.exit_code == 0, submitted.output
            study_id = submitted.stdout.strip().splitlines()[-1]
            wait_for_status(coordinator.store, study_id, "failed", describe=agents.describe)
            status = runner.invoke(app, ["study", "status", study_id, "--home", str(home)])
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()
    ref = f"sha256:{built.hash}"
    assert (
        f"site cleveland refused round 0 (stats): package-signer-untrusted: package "
        f"numpy_logistic 1.0.0 ({ref}) is signed by researcher 'alice'"
    ) in status.output, status.output
    assert "whom this site's policy does not trust (packages.trusted_signers: none)" in (
        status.output
    )
    assert (
        "site hungary refused round 0 (stats): package-dependencies: package numpy_logistic "
        f"1.0.0 ({ref}) needs what this site does not have installed: "
        "surely-absent-dist>=1 (not installed)"
    ) in status.output, status.output
    expected = {"cleveland": "package-signer-untrusted", "hungary": "package-dependencies"}
    for site, kind in expected.items():
        entries = audit_entries(states[site])
        decisions = [e["data"] for e in entries if e["event"] == "decision"]
        assert decisions and all(d["reason_kind"] == kind for d in decisions), decisions
        assert not any(e["event"] == "task-executed" for e in entries)
        assert (states[site] / "packages" / "archives" / f"{built.hash}.fcpkg").is_file()
