"""Sites whose features mean something else are refused for the study; it completes without them.

A real coordinator and six real site agents over mutual TLS offer a dataset named
``heart-disease``: the four built-in hospitals (``age, sex, trestbps, ...``), ``bern`` with
Hungary's raw file mapped through the common data model (``age, sex_1, cp_2, ...``: 13 columns
too, other names in other positions) and ``wide`` with 14 synthetic features (another input
shape). Before round 0 the coordinator takes the majority's schema as the study's reference,
refuses ``bern`` naming the differing columns and ``wide`` naming the shapes (in the round-0
record, the audit, ``fedcare study status``), sends neither a single task, and the study
completes with the four others: the same model as a simulation of those four.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.data.heart import HEART_SITES
from fedcare.site.config import DatasetEntry, SiteDataConfig

from ..conftest import require_mirror
from .helpers import (
    HOSPITALS,
    AgentThreads,
    assert_params_close,
    contributors,
    final_params,
    heart_data,
    heart_study,
    provision,
    running_coordinator,
    simulate,
    submit,
    wait_for_status,
)

pytestmark = pytest.mark.slow
CDM = Path(__file__).resolve().parents[2] / "examples" / "cdm" / "heart-disease"


def _odd_sites(mirror: Path) -> dict[str, SiteDataConfig]:
    mapped = DatasetEntry(
        source=str(mirror / "heart_disease" / HEART_SITES["hungary"]),
        schema=str(CDM / "schema.yaml"),
        mapping=str(CDM / "sites" / "hungary.yaml"),
    )
    wide = DatasetEntry(
        builtin="synthetic", site="site-0", options={"n_features": 14, "rows_per_site": 80}
    )
    return {
        "bern": SiteDataConfig(datasets={"heart-disease": mapped}),
        "wide": SiteDataConfig(datasets={"heart-disease": wide}),
    }


def test_misaligned_and_misshaped_sites_are_refused_naming_why(tmp_path: Path) -> None:
    mirror = require_mirror()
    odd = _odd_sites(mirror)
    kits = provision(tmp_path / "federation", [*HOSPITALS, *odd], name="schema")
    study = heart_study(rounds=2, min_sites=4)
    with running_coordinator(kits, tmp_path / "home") as coordinator:
        agents = AgentThreads()
        try:
            address = f"127.0.0.1:{coordinator.port}"
            for site in [*odd, *HOSPITALS]:  # the odd sites say Hello first
                data = odd.get(site) or heart_data(site)
                agents.start(kits.sites[site], data, address=address, state_dir=tmp_path / site)
            store = coordinator.store
            study_id = submit(store, study)
            wait_for_status(store, study_id, "completed", describe=agents.describe)
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()
        round0 = store.get_round(study_id, 0).record
        tasks = store.list_tasks(study_id)
        rounds = [store.get_round(study_id, r).record for r in (1, 2)]
        final = final_params(store, study_id)
        audit = (tmp_path / "home").rglob("*.jsonl")
        audited = "".join(p.read_text() for p in audit)
    refused = round0["refused_sites"]
    assert sorted(refused) == ["bern", "wide"], round0
    assert "column 1: 'sex_1' here vs 'sex' in the reference" in refused["bern"]
    assert "column 2: 'cp_2' here vs 'trestbps' in the reference" in refused["bern"]
    assert "input shape [14] here vs [13] in the reference" in refused["wide"]
    assert [c["name"] for c in round0["schema"]["columns"]][:3] == ["age", "sex", "trestbps"]
    assert {t.site_id for t in tasks} == set(HOSPITALS)  # never a task for a refused site
    assert all(sorted(contributors(r)) == sorted(HOSPITALS) for r in rounds)
    status = CliRunner().invoke(
        app, ["study", "status", study_id, "--home", str(tmp_path / "home")]
    )
    assert status.exit_code == 0, status.output
    assert "site bern refused for this study: feature schema differs" in status.output
    assert "'sex_1' here vs 'sex' in the reference" in status.output
    assert "site-refused" in audited and "'sex_1' here vs 'sex'" in audited
    # the study went on with the agreeing sites as if only they had been there
    assert_params_close(final, simulate(study).params)
