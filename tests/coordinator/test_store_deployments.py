"""The deployments table: migration 0007 up and down, the life of a deployment (requested,
delivered once, pending, answered once), idempotent requests, re-offers at Hello, monitoring,
and clear refusals (on SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import URL, inspect

from fedcare.coordinator import CoordinatorStore, current_revision, upgrade
from fedcare.coordinator.engine import make_engine
from fedcare.coordinator.migrate import alembic_config
from fedcare.errors import ConflictError, NotFoundError, ValidationError

from .helpers import FakeClock, running_study

HASH = "sha256:" + "ab" * 32


def _tables(url: str | URL) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migration_0007_adds_the_deployments_table_and_goes_back(empty_db_url: str | URL) -> None:
    upgrade(empty_db_url, "0006")
    assert "deployments" not in _tables(empty_db_url)
    upgrade(empty_db_url, "0007")
    assert current_revision(empty_db_url) == "0007" and "deployments" in _tables(empty_db_url)
    rendered = (
        empty_db_url
        if isinstance(empty_db_url, str)
        else empty_db_url.render_as_string(hide_password=False)
    )
    command.downgrade(alembic_config(rendered), "0006")
    assert current_revision(empty_db_url) == "0006"
    assert "deployments" not in _tables(empty_db_url) and "models" in _tables(empty_db_url)


def _model(store: CoordinatorStore) -> str:
    study_id = running_study(store, "A", "B")
    card = {"model": {"hash": "sha256:x"}, "sites": {"A": {}}}
    return store.register_model(study_id, 1, params=b"p", model_hash="sha256:x", card=card).version


def test_a_deployment_is_delivered_once_answered_once(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    version = _model(store)
    info, created = store.create_deployment(version, "A", bundle_sha256=HASH, requested_by="op")
    assert created and info.status == "requested" and info.id.startswith("dep-")
    same, created = store.create_deployment(version, "A", bundle_sha256=HASH, requested_by="x")
    assert not created and same.id == info.id and same.requested_by == "op"
    assert store.next_deployment_for("B") is None
    delivered = store.next_deployment_for("A")
    assert delivered is not None and delivered.status == "delivered"
    assert store.next_deployment_for("A") is None  # never handed out twice
    pending = store.answer_deployment(info.id, "A", "pending", reason="awaits the steward")
    assert pending.status == "pending" and pending.answered_at is None
    assert store.reoffer_deployments("A") == 1  # the site said Hello: offered again
    assert store.next_deployment_for("A") is not None
    clock.advance(5)
    taken = store.answer_deployment(
        info.id, "A", "taken", stored_sha256="sha256:" + "cd" * 32, approved_by="approval-3"
    )
    assert (taken.status, taken.approved_by, taken.reason) == ("taken", "approval-3", None)
    assert taken.answered_at is not None and taken.answered_at > info.requested_at
    with pytest.raises(ConflictError, match="already answered"):
        store.answer_deployment(info.id, "A", "refused", reason="too late")
    assert store.reoffer_deployments("A") == 0
    # taken with the same bundle: asking again returns it; a new bundle makes a new one
    assert not store.create_deployment(version, "A", bundle_sha256=HASH, requested_by="op")[1]
    other = "sha256:" + "ef" * 32
    clock.advance(1)
    assert store.create_deployment(version, "A", bundle_sha256=other, requested_by="op")[1]
    assert [d.status for d in store.list_deployments(version, "A")] == ["taken", "requested"]


def test_a_refusal_keeps_its_reason_and_a_new_request_follows(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    version = _model(store)
    info, _ = store.create_deployment(version, "B", bundle_sha256=HASH, requested_by="op")
    refused = store.answer_deployment(info.id, "B", "refused", reason="x" * 5000)
    clock.advance(1)
    assert refused.status == "refused" and len(refused.reason or "") == 2000
    again, created = store.create_deployment(version, "B", bundle_sha256=HASH, requested_by="op")
    assert created and again.id != info.id
    assert [d.id for d in store.list_deployments(version)] == [info.id, again.id]


def test_monitoring_is_kept_only_for_a_taken_model(store: CoordinatorStore) -> None:
    version = _model(store)
    info, _ = store.create_deployment(version, "A", bundle_sha256=HASH, requested_by="op")
    with pytest.raises(NotFoundError, match="has not taken model"):
        store.record_monitoring(version, "A", {"predictions": {"n": 3}})
    store.answer_deployment(info.id, "A", "taken", stored_sha256=HASH, approved_by="a-1")
    kept = store.record_monitoring(version, "A", {"predictions": {"n": 3}})
    assert kept.monitoring == {"predictions": {"n": 3}} and kept.monitoring_at is not None
    kept = store.record_monitoring(version, "A", {"predictions": {"n": 9}})
    assert store.get_deployment(info.id).monitoring == {"predictions": {"n": 9}}


def test_unknown_sites_versions_and_answers_are_refused(store: CoordinatorStore) -> None:
    version = _model(store)
    with pytest.raises(NotFoundError, match="no model version 'm-nope'"):
        store.create_deployment("m-nope", "A", bundle_sha256=HASH, requested_by="op")
    with pytest.raises(NotFoundError, match="no site with id 'Z'"):
        store.create_deployment(version, "Z", bundle_sha256=HASH, requested_by="op")
    store.set_site_status("B", "withdrawn")
    with pytest.raises(ConflictError, match="the site is 'withdrawn'"):
        store.create_deployment(version, "B", bundle_sha256=HASH, requested_by="op")
    info, _ = store.create_deployment(version, "A", bundle_sha256=HASH, requested_by="op")
    with pytest.raises(NotFoundError, match="for site 'B'"):
        store.answer_deployment(info.id, "B", "taken")
    with pytest.raises(ValidationError, match="a deployment answer is one of"):
        store.answer_deployment(info.id, "A", "requested")
    assert store.list_deployments(version) == [store.get_deployment(info.id)]
