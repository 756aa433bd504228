"""The coordinator's mirror privacy ledger (migration 0003, written with the round)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from fedcare.coordinator import CoordinatorStore, current_revision, upgrade
from fedcare.coordinator.migrate import alembic_config
from fedcare.coordinator.privacy_guard import round_spends
from fedcare.coordinator.store_ledger import PrivacySpend
from fedcare.errors import ConflictError
from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.privacy.budget import ledger_epsilon
from fedcare.records.study import StudyConfig

from .helpers import running_study

E1, E2 = DpEvent(1.2).to_dict(), DpEvent(0.8).to_dict()


def _study(**privacy: Any) -> StudyConfig:
    return StudyConfig.from_dict(
        {
            "name": "heart-private",
            "dataset": {"name": "heart-disease"},
            "model": {"kind": "logistic"},
            "rounds": 5,
            "min_sites": 2,
            "privacy": {"mode": "private", "dp": {"noise_multiplier": 1.2, "clip_norm": 1.0}}
            | privacy,
        }
    )


def _record(store: CoordinatorStore, sid: str, rnd: int, spends: list[PrivacySpend]) -> None:
    store.record_round(
        sid,
        rnd,
        params=b"p%d" % rnd,
        state=b"s%d" % rnd,
        record={"round": rnd, "fit": {}},
        duration_s=0.1,
        privacy=spends,
    )


def _tables(url: str | URL) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migration_0003_adds_the_ledger_table_and_goes_back(empty_db_url: str | URL) -> None:
    upgrade(empty_db_url, "0002")
    assert "privacy_ledger" not in _tables(empty_db_url)
    upgrade(empty_db_url, "0003")
    assert current_revision(empty_db_url) == "0003"
    engine = create_engine(empty_db_url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("privacy_ledger")}
    finally:
        engine.dispose()
    assert {"study_id", "round", "site_id", "dataset", "events", "epsilon_after"} <= columns
    rendered = (
        empty_db_url
        if isinstance(empty_db_url, str)
        else empty_db_url.render_as_string(hide_password=False)
    )
    command.downgrade(alembic_config(rendered), "0002")
    assert current_revision(empty_db_url) == "0002"
    assert "privacy_ledger" not in _tables(empty_db_url) and "models" in _tables(empty_db_url)


def test_rows_mirror_each_site_and_compose_across_studies(store: CoordinatorStore) -> None:
    first = running_study(store, "A", "B", name="one")
    _record(store, first, 1, [PrivacySpend("A", "heart", (E1,)), PrivacySpend("B", "heart", (E1,))])
    _record(store, first, 2, [PrivacySpend("A", "heart", (E1,))])
    second = running_study(store, "A", name="two")
    _record(store, second, 1, [PrivacySpend("A", "heart", (E2,)), PrivacySpend("A", "eicu", (E2,))])
    rows = store.privacy_ledger(first)
    assert [(r.round, r.site_id) for r in rows] == [(1, "A"), (1, "B"), (2, "A")]
    assert rows[0].events == [E1]
    assert store.site_epsilon(first) == pytest.approx(
        {"A": ledger_epsilon([E1, E1]), "B": ledger_epsilon([E1])}, rel=1e-9
    )
    # site A's epsilon on heart composes every study's events; eicu is a separate budget
    assert store.site_epsilon(second) == pytest.approx({"A": ledger_epsilon([E2])}, rel=1e-9)
    heart = [r for r in store.privacy_ledger(second) if r.dataset == "heart"]
    assert heart[0].epsilon_after == pytest.approx(ledger_epsilon([E1, E1, E2]), rel=1e-9)
    assert [r.site_id for r in store.privacy_ledger(site_id="B")] == ["B"]


def test_ledger_rows_share_the_rounds_transaction(store: CoordinatorStore) -> None:
    sid = running_study(store, "A")
    _record(store, sid, 1, [PrivacySpend("A", "heart", (E1,))])
    with pytest.raises(ConflictError, match="already recorded"):
        _record(store, sid, 1, [PrivacySpend("A", "heart", (E2,))])

    def boom(*_: Any) -> None:
        raise RuntimeError("crash")

    event.listen(Session, "before_commit", boom)
    try:
        with pytest.raises(RuntimeError, match="crash"):
            _record(store, sid, 2, [PrivacySpend("A", "heart", (E2,))])
    finally:
        event.remove(Session, "before_commit", boom)
    assert [(r.round, r.events) for r in store.privacy_ledger(sid)] == [(1, [E1])]
    assert store.last_completed_round(sid) is not None
    assert store.get_study(sid).last_completed_round == 1


def test_round_spends_reads_contributing_sites_and_dp_sgd() -> None:
    fit = {
        "dp_events": [E1],
        "contributing_sites": ["A", "B"],
        "site_info": {"B": {"dp_event": '{"noise_multiplier": 2.0}'}},
    }
    spends = round_spends(_study(), {"round": 1, "fit": fit})
    assert [(s.site_id, s.dataset) for s in spends] == [
        ("A", "heart-disease"),
        ("B", "heart-disease"),
    ]
    assert spends[0].events == (E1,) and spends[1].events == (E1, {"noise_multiplier": 2.0})
    secure = StudyConfig.from_dict({**_study().model_dump(), "privacy": {"mode": "secure"}})
    assert round_spends(secure, {"round": 1, "fit": fit})[0].site_id == "B"  # DP-SGD only
    assert round_spends(secure, {"round": 1, "fit": {"contributing_sites": ["A"]}}) == []


def test_study_status_and_results_show_epsilon_per_site(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedcare.cli.main import app
    from fedcare.coordinator.results import study_results
    from fedcare.coordinator.server import default_db_url

    home = tmp_path / "home"
    home.mkdir()
    store = CoordinatorStore(default_db_url(home), home / "artifacts")
    try:
        study = _study(epsilon=50.0)
        sid = store.create_study(study.name, study.model_dump(mode="json"), 1)
        store.set_study_status(sid, "running")
        store.record_round(sid, 0, params=b"p", state=b"s", record={"round": 0}, duration_s=0)
        spends = [PrivacySpend("A", "heart-disease", (E1,))]
        record = {"round": 1, "fit": {"dp_events": [E1]}}
        store.record_round(
            sid, 1, params=b"p", state=b"s", record=record, duration_s=0.1, privacy=spends
        )
        summary = study_results(store, sid)["privacy_ledger"]
    finally:
        store.close()
    eps = ledger_epsilon([E1])
    assert summary["site_epsilon"] == pytest.approx({"A": eps}) and summary["budget"] == 50.0
    assert summary["study_epsilon"] == pytest.approx(eps, rel=1e-9)
    out = CliRunner().invoke(app, ["study", "status", sid, "--home", str(home)])
    assert out.exit_code == 0, out.output
    assert f"site A: epsilon spent on this dataset {eps:.3g}" in out.output


def test_the_mirror_computes_hidden_dp_sgd_events_as_the_sites_do() -> None:
    """Mode private + local DP-SGD: the mirror's events (from the reply info, or recomputed
    from the registered row counts) equal what each site's ledger records."""
    from fedcare.data.registry import load_dataset
    from fedcare.records.messages import Task
    from fedcare.simulation.run import grid_for, train_on_grid
    from fedcare.site.ledger import task_events

    dp = {"noise_multiplier": 1.0, "clip_norm": 1.0, "local_dp_sgd": {"noise_multiplier": 1.1}}
    study = StudyConfig.from_dict(
        {
            **_study().model_dump(),
            "rounds": 1,
            "min_sites": 4,
            "training": {"epochs": 1, "lr": 0.1, "batch_size": 16},
            "privacy": {"mode": "private", "dp": dp},
        }
    )
    sites = list(load_dataset("heart-disease").sites)
    grid = grid_for(sites, record=True)
    model = train_on_grid(grid, study, sites[0].train.input_shape, label="federated")
    rows = {s.site_id: len(s.train) for s in sites}
    record = model.history[0].to_dict()
    mirrored = {s.site_id: s.events for s in round_spends(study, record, rows)}
    # the same without the sites' reply info: computed from the registered row counts
    record["fit"]["site_info"] = {}
    assert {s.site_id: s.events for s in round_spends(study, record, rows)} == mirrored
    fits = [m for m in grid.wire if isinstance(m, Task) and m.kind == "fit"]
    assert len(fits) == len(sites) == len(mirrored)
    for t in fits:
        at_site = [e.to_dict() for e in task_events(t, rows[t.site_id])]
        assert len(at_site) == 2 and at_site[1]["sampling_probability"] < 1
        ours = list(mirrored[t.site_id])
        assert [(e["count"], e["sampling_probability"]) for e in ours] == [
            (e["count"], e["sampling_probability"]) for e in at_site
        ]
        assert ledger_epsilon(ours) == pytest.approx(ledger_epsilon(at_site), rel=1e-9)
