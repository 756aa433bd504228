"""Invalid rows end to end (issue 16.5): a coordinator and two site agents over mutual TLS.

South's export has 12 of its 240 rows corrupted (unparseable ages, out-of-range glucose, lines
with a field too many). A study whose plan skips up to 5 % invalid rows completes; the round
records keep each site's counts (``fit.site_info``), the model card and the report show them,
south's audit log has a ``rows-skipped`` entry per task. The same study without the option
runs without south (its tasks fail with the count).
"""

from __future__ import annotations

import html
import json
import threading
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedcare.audit.check import read_entries
from fedcare.cli.governance import build_governance
from fedcare.coordinator.results import study_results
from fedcare.data.cdm.fixtures import fixture_federation
from fedcare.evaluation.report import render_report
from fedcare.records.study import StudyConfig
from fedcare.site.agent import SiteAgent
from fedcare.site.config import SiteDataConfig
from fedcare.site.stewardship import AUDIT_FILE

from ..site.test_row_skips import CDM, REASONS, ROWS, _site
from .helpers import AgentThreads, provision, running_coordinator, submit, wait_for_status

pytestmark = pytest.mark.slow
SITES = ("north", "south")


def _study(skip: bool) -> StudyConfig:
    dataset: dict[str, object] = {"name": "fixture"}
    if skip:
        dataset["skip_invalid_rows"] = {"max_fraction": 0.05}
    return StudyConfig.from_dict(
        {
            "name": f"cardio-{'skip' if skip else 'strict'}",
            "dataset": dataset,
            "model": {"kind": "logistic"},
            "preprocessing": {"impute": "mean", "scale": "local"},
            "training": {"epochs": 1, "lr": 0.1, "batch_size": 16},
            "rounds": 2,
            "min_sites": 1,
            "seed": 5,
            "baselines": {"local": False, "pooled": False, "cross_site": False},
        }
    )


def _north(folder: Path) -> SiteDataConfig:
    tables = fixture_federation(np.random.default_rng(4), rows_per_site=ROWS, bad_values=False)
    tables["north"].to_csv(folder / "north.csv", index=False)
    entry = {
        "source": str(folder / "north.csv"),
        "schema": str(CDM / "schema.yaml"),
        "mapping": str(CDM / "sites" / "north.yaml"),
    }
    (folder / "north.yaml").write_text(yaml.safe_dump({"datasets": {"fixture": entry}}))
    return SiteDataConfig.from_yaml(folder / "north.yaml")


def _start(agents: AgentThreads, kit: Path, data: SiteDataConfig, state: Path, port: int) -> None:
    """A real agent with its governance (audit log, approve-all) in a thread."""
    governance = build_governance(state, kit, None, approve_all=True)
    agent = SiteAgent(
        kit, data, state_dir=state, coordinator=f"127.0.0.1:{port}", poll_wait=1.0,
        time_limit=60.0, governance=governance,
    )  # fmt: skip

    def main() -> None:
        try:
            agent.run(agents.stop)
        except BaseException as err:
            agents.errors[agent.site_id] = err

    thread = threading.Thread(target=main, name=f"agent-{agent.site_id}", daemon=True)
    agents.agents[agent.site_id], agents.threads[agent.site_id] = agent, thread
    agents.events[agent.site_id] = deque()
    thread.start()


def test_a_deployed_study_skips_counts_and_reports(tmp_path: Path) -> None:
    kits = provision(tmp_path / "federation", SITES)
    (tmp_path / "north").mkdir()
    (tmp_path / "south").mkdir()
    data = {
        "north": _north(tmp_path / "north"),
        "south": SiteDataConfig.from_yaml(_site(tmp_path / "south")),
    }
    with running_coordinator(kits, tmp_path / "home") as coordinator:
        agents = AgentThreads()
        try:
            for site in SITES:
                _start(
                    agents,
                    kits.sites[site],
                    data[site],
                    tmp_path / "state" / site,
                    coordinator.port,
                )
            store = coordinator.store
            skipping = submit(store, _study(skip=True))
            wait_for_status(store, skipping, "completed", describe=agents.describe)
            strict = submit(store, _study(skip=False))
            wait_for_status(store, strict, "completed", describe=agents.describe)
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()
        rounds = [r.record for r in store.list_rounds(skipping) if r.round > 0]
        assert len(rounds) == 2
        for record in rounds:
            info = record["fit"]["site_info"]
            counts = json.loads(info["south"]["invalid_rows"])
            assert counts == {"rows": ROWS, "invalid": 12, "skipped": True, "reasons": REASONS}
            assert json.loads(info["north"]["invalid_rows"])["invalid"] == 0
        results = study_results(store, skipping)
        assert results["model_card"]["sites"]["south"]["invalid_rows"]["invalid"] == 12
        page = html.unescape(render_report(results))
        assert "south skipped 12 of 240 rows (out-of-range value in 'glucose': 4" in page
        strict_rounds = [r.record for r in store.list_rounds(strict) if r.round > 0]
        assert len(strict_rounds) == 2
        for record in strict_rounds:
            assert sorted(record["fit"]["site_info"]) == ["north"]
            reason = record["fit"]["failed_sites"]["south"]
            assert "3 of 240 rows could not be read" in reason
    entries = read_entries(tmp_path / "state" / "south" / AUDIT_FILE)
    skipped = [e for e in entries if e.get("event") == "rows-skipped"]
    assert len(skipped) >= 4  # 2 fit tasks and evaluations of the skipping study
    assert all(e["data"]["reasons"] == REASONS and e["data"]["invalid"] == 12 for e in skipped)
    assert not [e for e in read_entries(tmp_path / "state" / "north" / AUDIT_FILE)
                if e.get("event") == "rows-skipped" and e["data"]["invalid"]]  # fmt: skip
