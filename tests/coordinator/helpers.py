"""Helpers shared by the coordinator tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from fedcare.coordinator import CoordinatorStore
from fedcare.coordinator.db import metadata


class FakeClock:
    """A settable UTC clock for the store."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def dump(store: CoordinatorStore) -> dict[str, list[str]]:
    """Every row of every table, as sorted reprs (to compare the database before and after)."""
    with store.engine.connect() as conn:
        return {
            t.name: sorted(repr(tuple(r)) for r in conn.execute(select(t)))
            for t in metadata.sorted_tables
        }


def running_study(store: CoordinatorStore, *sites: str, name: str = "study") -> str:
    """Register ``sites`` (if new) and create a running study; return its id."""
    known = {s.id for s in store.list_sites()}
    for site in sites:
        if site not in known:
            store.register_site(site, f"serial-{site}")
    study_id = store.create_study(name, {"rounds": 3}, seed=42)
    store.set_study_status(study_id, "running")
    return study_id
