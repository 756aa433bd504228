"""The site registry."""

from __future__ import annotations

import pytest

from fedcare.coordinator import CoordinatorStore
from fedcare.errors import ConflictError, NotFoundError, ValidationError

from .helpers import FakeClock, dump


def test_register_touch_and_list(store: CoordinatorStore, clock: FakeClock) -> None:
    site = store.register_site("hospital-b", "0A1B", datasets={"heart": {"rows": 10}})
    assert site.status == "active" and site.first_seen is None
    store.register_site("hospital-a", "0C2D")
    clock.advance(5)
    touched = store.touch_site("hospital-b", version="0.1.0")
    assert touched.first_seen == touched.last_seen == clock.now
    assert touched.first_seen is not None and touched.first_seen.tzinfo is not None
    clock.advance(5)
    again = store.touch_site("hospital-b", datasets={"heart": {"rows": 12}})
    assert again.first_seen == touched.first_seen and again.last_seen == clock.now
    assert again.version == "0.1.0" and again.datasets == {"heart": {"rows": 12}}
    assert store.get_site("hospital-b") == again
    assert [s.id for s in store.list_sites()] == ["hospital-a", "hospital-b"]


def test_duplicates_and_unknown_sites(store: CoordinatorStore) -> None:
    store.register_site("A", "01")
    before = dump(store)
    with pytest.raises(ConflictError, match="'A' is already registered"):
        store.register_site("A", "02")
    assert dump(store) == before
    with pytest.raises(NotFoundError, match="'nope'"):
        store.touch_site("nope")
    with pytest.raises(ValidationError, match="site_id"):
        store.register_site("", "01")


def test_status_transitions(store: CoordinatorStore) -> None:
    store.register_site("A", "01")
    assert store.set_site_status("A", "withdrawn").status == "withdrawn"
    assert store.set_site_status("A", "active").status == "active"
    assert store.set_site_status("A", "revoked").status == "revoked"
    for status in ("active", "withdrawn", "revoked"):
        with pytest.raises(ConflictError, match="from 'revoked'"):
            store.set_site_status("A", status)
    with pytest.raises(ValidationError, match="'gone'"):
        store.set_site_status("A", "gone")
    assert [s.id for s in store.list_sites("revoked")] == ["A"]
    assert store.list_sites("active") == []
