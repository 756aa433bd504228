"""Studies and their allowed status transitions."""

from __future__ import annotations

import pytest

from fedcare.coordinator import CoordinatorStore
from fedcare.coordinator.db import STUDY_STATUSES
from fedcare.coordinator.store_studies import STUDY_TRANSITIONS
from fedcare.errors import ConflictError, NotFoundError, ValidationError

from .helpers import dump

# How to bring a new (pending) study to each status.
PATHS = {
    "pending": [],
    "running": ["running"],
    "failed": ["failed"],
    "completed": ["running", "completed"],
    "cancelled": ["cancelled"],
}


def test_create_get_list(store: CoordinatorStore) -> None:
    config = {"model": {"name": "logistic"}, "rounds": 5, "lr": 0.1}
    sid = store.create_study("heart", config, seed=2**40)
    study = store.get_study(sid)
    assert (study.name, study.config, study.seed, study.status) == (
        "heart",
        config,
        2**40,
        "pending",
    )
    assert study.last_completed_round is None and study.created_at.tzinfo is not None
    other = store.create_study("tcga", {}, seed=0, study_id="tcga-1")
    assert other == "tcga-1"
    assert [s.id for s in store.list_studies()] == [sid, "tcga-1"]
    assert store.list_studies("running") == []
    with pytest.raises(ConflictError, match="'tcga-1' already exists"):
        store.create_study("again", {}, seed=0, study_id="tcga-1")
    with pytest.raises(NotFoundError, match="'missing'"):
        store.get_study("missing")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("", {}, 0), "study name"),
        (("s", {}, -1), "seed"),
        (("s", {}, 2**63), "seed"),
        (("s", {}, True), "seed"),
        (("s", [1], 0), "config must be a dict"),
    ],
)
def test_bad_arguments_are_named(store: CoordinatorStore, args: tuple, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        store.create_study(*args)


def test_only_allowed_transitions(store: CoordinatorStore) -> None:
    for start, path in PATHS.items():
        for target in STUDY_STATUSES:
            sid = store.create_study(f"{start}-{target}", {}, seed=1)
            for step in path:
                store.set_study_status(sid, step)
            assert store.get_study(sid).status == start
            if target in STUDY_TRANSITIONS[start]:
                after = store.set_study_status(sid, target, reason="because")
                assert (after.status, after.reason) == (target, "because")
            else:
                before = dump(store)
                with pytest.raises(ConflictError, match=f"from '{start}' to '{target}'"):
                    store.set_study_status(sid, target)
                assert dump(store) == before
    assert "running" not in STUDY_TRANSITIONS["completed"]
    with pytest.raises(ValidationError, match="'paused'"):
        store.set_study_status(sid, "paused")


def test_a_running_study_carries_a_note_that_never_overwrites_how_it_ended(
    store: CoordinatorStore,
) -> None:
    sid = store.create_study("heart", {}, seed=0)
    assert store.note_study(sid, "waiting: for 2 sites") is False  # pending: no note
    store.set_study_status(sid, "running")
    assert store.note_study(sid, "waiting: awaiting approval at va") is True
    info = store.get_study(sid)
    assert (info.status, info.reason) == ("running", "waiting: awaiting approval at va")
    assert store.note_study(sid, None) and store.get_study(sid).reason is None
    store.set_study_status(sid, "failed", "plan not approved at va within 24 h")
    assert store.note_study(sid, "waiting: again") is False
    assert store.get_study(sid).reason == "plan not approved at va within 24 h"
    with pytest.raises(NotFoundError):
        store.note_study("nope", None)
