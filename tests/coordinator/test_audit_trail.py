"""The coordinator's audit trail: round summaries, site events, reconciliation, a valid log."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcare.audit import verify_log
from fedcare.coordinator import CoordinatorStore
from fedcare.coordinator.audit_trail import CoordinatorAudit, round_summary, site_events
from fedcare.transport.provisioning import create_federation

from .helpers import running_study

RECORD = {
    "round": 2,
    "fit": {
        "num_contributions": 2,
        "mean_norm": 0.5,
        "anomaly_scores": {"A": 0.1, "B": 3.0},
        "rejected_sites": ["B"],
        "sampled_sites": ["A", "B", "C", "D", "E"],
        "failed_sites": {
            "C": "policy-refused: the study's privacy mode is weaker than the site's",
            "D": "consent-withdrawn: the data steward withdrew",
            "E": "timeout: task ran past the site's time limit",
        },
        "site_info": {"A": {}, "B": {}, "F": {}},
    },
}


def test_round_summary_separates_sampled_aggregated_and_failed_sites() -> None:
    summary = round_summary(RECORD)
    assert summary["round"] == 2
    assert summary["sampled_sites"] == ["A", "B", "C", "D", "E"]
    assert summary["aggregated_sites"] == ["A", "F"]
    assert sorted(summary["failed_sites"]) == ["C", "D", "E"]
    assert summary["measurements"] == {
        "num_contributions": 2,
        "mean_norm": 0.5,
        "anomaly_scores": {"A": 0.1, "B": 3.0},
        "rejected_sites": ["B"],
    }


def test_refusals_and_withdrawals_become_site_events() -> None:
    events = site_events(RECORD)
    assert [(e, d["site"]) for e, d in events] == [("site-refused", "C"), ("site-withdrew", "D")]
    assert events[0][1]["round"] == 2 and "privacy mode" in events[0][1]["reason"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit-kit")
    return create_federation(root, name="trail", sites=["a"]).coordinator_kit


def _round(store: CoordinatorStore, study: str, rnd: int) -> None:
    record = RECORD if rnd else {"round": 0, "kind": "start"}
    store.record_round(
        study, rnd, params=b"p%d" % rnd, state=b"s%d" % rnd, record=record, duration_s=1.0
    )


def test_reconcile_appends_what_the_database_holds_once(
    store: CoordinatorStore, kit: Path, tmp_path: Path
) -> None:
    study = running_study(store, "A")
    audit = CoordinatorAudit.open(tmp_path, kit, actor="coordinator:test")
    _round(store, study, 0)
    audit.round_completed(store.get_round(study, 0))
    _round(store, study, 1)  # committed; the audit append "crashed"
    _round(store, study, 2)
    assert audit.reconcile(store, study) == 2
    assert audit.reconcile(store, study) == 0
    store.set_study_status(study, "failed", "no sites")
    assert audit.reconcile(store, study) == 1
    entries = audit.entries(study)
    rounds = [
        (d["round"], d.get("reconciled", False)) for e, d in entries if e == "round-completed"
    ]
    assert rounds == [(0, False), (1, True), (2, True)]
    assert ("site-refused", "C") in [(e, d.get("site")) for e, d in entries]
    assert entries[-1] == (
        "study-failed",
        {"study_id": study, "reason": "no sites", "reconciled": True},
    )
    other = running_study(store, "A", name="other")
    _round(store, other, 0)
    assert audit.reconcile_all(store) == 1  # the other study's round 0 only
    assert [e for e, _ in audit.entries(other)] == ["round-completed"]
    checkpoint = next(d["checkpoint"] for e, d in entries if e == "round-completed")
    assert checkpoint["params"] == store.get_round(study, 0).params_digest
    audit.close()
    result = verify_log(tmp_path / "audit.jsonl", cert_path=kit / "cert.pem")
    assert result.ok, result.reason
    assert result.count == len(entries) + 1


def test_without_a_log_the_trail_is_a_no_op(store: CoordinatorStore) -> None:
    audit = CoordinatorAudit(None)
    study = running_study(store, "A")
    audit.append("study-started", study)
    assert audit.reconcile(store, study) == 0 and audit.entries(study) == []
