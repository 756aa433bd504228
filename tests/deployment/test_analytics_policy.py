"""Analytics on a real federation of mapped sites, each with its own policy's ``min_cell``.

Two governed site agents (policy file, approvals, signed audit, as ``fedcare site start``
builds them) serve the fixture federation's north and south tables, mapped to the fixture
schema (north codes glucose in mmol/L, south in mg/dL). Each steward approves the spec by the
hash ``fedcare site plan`` prints. North's policy sets ``min_cell: 1``, south keeps the
default 5: over mutual TLS, only south withholds small cells, and the federated glucose mean
is the pooled harmonized one.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from fedcare.cli.governance import build_governance, steward_store
from fedcare.cli.main import app
from fedcare.data.cdm import Schema, SiteMapping, analysis_frame, check_table
from fedcare.data.cdm.fixtures import fixture_federation
from fedcare.site.agent import SiteAgent
from fedcare.site.config import DatasetEntry, SiteDataConfig

from .helpers import AgentThreads, provision, running_coordinator

pytestmark = pytest.mark.slow
CDM = Path(__file__).resolve().parents[2] / "examples" / "cdm" / "fixture"
SITES = ("north", "south")
EDGES = [float(e) for e in np.arange(2.0, 14.5, 0.5)]
SPEC = {
    "name": "glucose-by-site-policy",
    "dataset": "fixture",
    "queries": [
        {"type": "moments", "variables": ["glucose"]},
        {"type": "histogram", "variable": "glucose", "edges": EDGES},
    ],
}


def _site_data(site: str, table: pd.DataFrame, folder: Path) -> SiteDataConfig:
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / f"{site}.csv", index=False)
    entry = DatasetEntry(
        source=str(folder / f"{site}.csv"),
        schema_file=str(CDM / "schema.yaml"),
        mapping=str(CDM / "sites" / f"{site}.yaml"),
    )
    return SiteDataConfig(datasets={"fixture": entry})


def _start(agents: AgentThreads, kit: Path, data: SiteDataConfig, state: Path, port: int) -> None:
    governance = build_governance(state, kit, state.parent / f"{state.name}-policy.yaml")
    agent = SiteAgent(
        kit, data, state_dir=state, coordinator=f"127.0.0.1:{port}", poll_wait=1.0,
        time_limit=60.0, governance=governance,
    )  # fmt: skip
    site = agent.site_id

    def main() -> None:
        try:
            agent.run(agents.stop)
        except BaseException as err:
            agents.errors[site] = err

    thread = threading.Thread(target=main, name=f"agent-{site}", daemon=True)
    agents.agents[site], agents.threads[site] = agent, thread
    thread.start()


def test_each_sites_policy_min_cell_holds_on_the_wire(tmp_path: Path) -> None:
    tables = fixture_federation(np.random.default_rng(21), rows_per_site=120)
    schema = Schema.from_yaml(CDM / "schema.yaml")
    mappings = {s: SiteMapping.from_yaml(CDM / "sites" / f"{s}.yaml") for s in SITES}
    frames = [analysis_frame(check_table(tables[s], schema, mappings[s])) for s in SITES]
    spec_file = tmp_path / "query.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    runner = CliRunner()
    plan = runner.invoke(app, ["site", "plan", str(spec_file)])
    assert plan.exit_code == 0, plan.output
    plan_hash = plan.stdout.splitlines()[0]
    kits = provision(tmp_path / "federation", SITES, name="analytics-policy")
    policies = {"north": {"min_cell": 1}, "south": {}}
    home, out = tmp_path / "home", tmp_path / "out"
    with running_coordinator(kits, home) as coordinator:
        agents = AgentThreads()
        try:
            for site in SITES:
                state = tmp_path / "state" / site
                state.mkdir(parents=True)
                (state.parent / f"{site}-policy.yaml").write_text(yaml.safe_dump(policies[site]))
                until = datetime.now(timezone.utc) + timedelta(days=1)
                steward_store(state, kits.sites[site]).approve(SPEC["name"], plan_hash, until)
                data = _site_data(site, tables[site], tmp_path / "exports")
                _start(agents, kits.sites[site], data, state, coordinator.port)
            args = ["analytics", str(spec_file), "--federation", str(home), "--min-sites", "2"]
            cli = runner.invoke(app, [*args, "--wait", "--timeout", "120", "--out", str(out)])
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()
    assert cli.exit_code == 0, f"{cli.output}\n{agents.describe()}"
    got = json.loads((out / "results.json").read_text())
    assert got["failures"] == {}, got["failures"]
    assert got["min_cell"] == {"north": 1, "south": 5}
    moments, hist = got["queries"]
    glucose = pd.to_numeric(pd.concat(frames)["glucose"]).dropna().to_numpy(dtype=float)
    assert moments["mean"][0] == pytest.approx(glucose.mean(), abs=1e-9)
    assert "north" not in hist["suppressed"] and hist["suppressed"].get("south")
    south = pd.to_numeric(frames[1]["glucose"]).dropna()
    counts, _ = np.histogram(south, bins=EDGES)
    small = [int(i) for i in np.flatnonzero((counts > 0) & (counts < 5))]
    assert hist["suppressed"]["south"] == small
