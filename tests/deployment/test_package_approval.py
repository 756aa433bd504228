"""A study package runs in a deployment once approved; its next version waits for approval.

A real coordinator over mutual TLS, a real governed site agent whose policy trusts the
researcher. The steward approves version 1.0.0 of a package (``fedcare site approve`` on the
study file, which reviews the signed archive); the study submitted with ``fedcare study
submit`` completes, its tasks fetched by hash and run. Version 1.1.0 of the same package makes a
new plan hash: the study waits ("awaiting approval", the site refuses ``plan-not-approved``
naming that hash) until the steward approves it too, and then completes.
The coordinator computes the initial parameters in its sandboxed runner from its store; the
site fetches and verifies every package into its own cache before the approval check and
runs it in its own runner.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.transport.researchers import add_researcher
from tests.packages.distribution import build

from ..conftest import require_mirror
from .helpers import AgentThreads, heart_study, provision, running_coordinator, wait_for_status
from .test_governance import audit_entries, start_agent

pytestmark = pytest.mark.slow
runner = CliRunner(env={"COLUMNS": "400"})


def _cli(*args: str | Path) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_approved_version_runs_and_the_next_waits_for_its_approval(tmp_path: Path) -> None:
    require_mirror()
    kits = provision(tmp_path / "federation", ("site-a",), name="package-approval")
    add_researcher(kits.root, "alice")
    home, kit = tmp_path / "home", kits.sites["site-a"]
    files = {}
    for version, code in (("1.0.0", ""), ("1.1.0", "\n\nREVISION = 2\n")):
        built = build(tmp_path / "pk", kits.root, version=version, code=code)
        doc = heart_study(name="package-study", rounds=1, min_sites=1).model_dump(mode="json")
        doc["model"] = {"kind": "package", "package": str(built.path)}
        doc["preprocessing"] = {"impute": "mean", "scale": "local"}
        doc["approval_wait"] = 3600
        files[version] = tmp_path / f"study-{version}.yaml"
        files[version].write_text(yaml.safe_dump(doc))
    state = tmp_path / "state" / "site-a"
    site = ("--state", state, "--kit", kit)
    plans = {v: _cli("site", "plan", f, *site).splitlines()[0] for v, f in files.items()}
    assert plans["1.0.0"] != plans["1.1.0"]
    _cli("site", "approve", files["1.0.0"], *site)

    with running_coordinator(kits, home, round_retries=1) as coordinator:
        agents = AgentThreads()
        try:
            start_agent(
                agents, kits, "site-a", "cleveland", tmp_path, coordinator.port,
                policy={"packages": {"trusted_signers": ["alice"]}},
            )  # fmt: skip
            first = _cli("study", "submit", files["1.0.0"], "--home", home, "--queue").splitlines()[
                -1
            ]
            wait_for_status(coordinator.store, first, "completed", describe=agents.describe)

            second = _cli(
                "study", "submit", files["1.1.0"], "--home", home, "--queue"
            ).splitlines()[-1]
            end = time.monotonic() + 60
            while "awaiting approval at site-a" not in (
                out := _cli("study", "status", second, "--home", home)
            ):
                assert time.monotonic() < end, out
                time.sleep(0.2)
            assert plans["1.1.0"] in out, out
            _cli("site", "approve", files["1.1.0"], *site)
            wait_for_status(coordinator.store, second, "completed", describe=agents.describe)
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()
    entries = audit_entries(state)
    refused = [
        e["data"] for e in entries
        if e["event"] == "decision" and e["data"].get("reason_kind") == "plan-not-approved"
    ]  # fmt: skip
    assert refused and all(plans["1.1.0"] in d["reason"] for d in refused), refused
    verified = {e["data"]["version"] for e in entries if e["event"] == "package-verified"}
    assert verified == {"1.0.0", "1.1.0"}
