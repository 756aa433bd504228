"""The model registry: migration 0002, register/list/read, lineage, errors naming the version."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import URL, inspect

from fedcare.coordinator import CoordinatorStore, current_revision, upgrade
from fedcare.coordinator.engine import make_engine
from fedcare.coordinator.migrate import alembic_config
from fedcare.coordinator.store_models import model_version_id
from fedcare.errors import ConflictError, NotFoundError, ValidationError

from .helpers import FakeClock, running_study


def _tables(url: str | URL) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _config(url: str | URL) -> object:
    rendered = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return alembic_config(rendered)


def test_migration_0002_adds_the_models_table_and_goes_back(empty_db_url: str | URL) -> None:
    upgrade(empty_db_url, "0001")
    assert "models" not in _tables(empty_db_url)
    upgrade(empty_db_url, "0002")
    assert current_revision(empty_db_url) == "0002"
    assert "models" in _tables(empty_db_url)
    command.downgrade(_config(empty_db_url), "0001")  # type: ignore[arg-type]
    assert current_revision(empty_db_url) == "0001"
    assert "models" not in _tables(empty_db_url) and "studies" in _tables(empty_db_url)


def _register(store: CoordinatorStore, study_id: str, *, parent: str | None = None) -> str:
    card = {"model": {"hash": f"sha256:{study_id}"}, "sites": {"A": {}}, "score": float("nan")}
    info = store.register_model(
        study_id,
        3,
        params=f"params of {study_id}".encode(),
        model_hash=f"sha256:{study_id[:8]}",
        card=card,
        parent=parent,
    )
    return info.version


def test_register_list_and_read_back(store: CoordinatorStore, clock: FakeClock) -> None:
    first = running_study(store, "A", name="first")
    clock.advance(5)
    second = running_study(store, "A", name="second")
    v1 = _register(store, first)
    clock.advance(5)
    v2 = _register(store, second, parent=v1)
    assert v1 == model_version_id(first, 3) and v1 != v2
    model = store.get_model(v2)
    assert (model.study_id, model.round, model.parent) == (second, 3, v1)
    assert model.card["sites"] == {"A": {}} and model.card["score"] is None  # strict JSON
    assert model.created_at == clock.now
    assert store.model_params(v2) == f"params of {second}".encode()
    assert [m.version for m in store.list_models()] == [v1, v2]
    assert [m.version for m in store.list_models(first)] == [v1]
    assert [m.version for m in store.lineage(v2)] == [v2, v1]
    assert [m.version for m in store.lineage(v1)] == [v1]


def test_an_unknown_version_is_not_found_naming_it(store: CoordinatorStore) -> None:
    with pytest.raises(NotFoundError, match="no model version 'm-nope' in the registry"):
        store.get_model("m-nope")
    with pytest.raises(NotFoundError, match="'m-nope'"):
        store.lineage("m-nope")
    with pytest.raises(NotFoundError, match="'m-nope'"):
        store.model_params("m-nope")


def test_a_bad_parent_or_study_changes_nothing(store: CoordinatorStore) -> None:
    study = running_study(store, "A")
    with pytest.raises(NotFoundError, match="parent model version 'm-ghost'"):
        _register(store, study, parent="m-ghost")
    with pytest.raises(NotFoundError, match="no study with id 'no-study'"):
        _register(store, "no-study")
    assert store.list_models() == []


def test_registering_a_study_round_twice_is_a_conflict(store: CoordinatorStore) -> None:
    study = running_study(store, "A")
    version = _register(store, study)
    with pytest.raises(ConflictError, match=f"model version '{version}'"):
        _register(store, study)
    assert len(store.list_models()) == 1


def test_malformed_arguments_are_refused(store: CoordinatorStore) -> None:
    study = running_study(store, "A")
    with pytest.raises(ValidationError, match="round"):
        store.register_model(study, -1, params=b"x", model_hash="h", card={})
    with pytest.raises(ValidationError, match="params must be bytes"):
        store.register_model(study, 1, params="x", model_hash="h", card={})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="model_hash"):
        store.register_model(study, 1, params=b"x", model_hash="", card={})


def test_models_survive_reopening_the_store(
    db_url: str | URL, tmp_path: Path, clock: FakeClock
) -> None:
    with CoordinatorStore(db_url, tmp_path / "art", clock=clock) as store:
        version = _register(store, running_study(store, "A"))
    with CoordinatorStore(db_url, tmp_path / "art", clock=clock) as store:
        assert store.get_model(version).version == version
