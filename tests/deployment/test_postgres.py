"""A deployment study with the coordinator's state on a real PostgreSQL server.

The coordinator keeps everything in a throwaway schema of the server at 127.0.0.1:5432 (or
``FEDCARE_TEST_POSTGRES_URL``); two heart-disease site agents run a short study through it.
Without a server the test skips, saying why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import require_mirror
from .helpers import (
    deployment,
    final_params,
    heart_study,
    max_abs_diff,
    provision,
    round_params,
    submit,
    wait_for_status,
)

pytestmark = pytest.mark.slow
SITES = ("cleveland", "hungary")
ROUNDS = 2


def test_a_study_runs_with_the_coordinator_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    require_mirror()
    kits = provision(tmp_path / "federation", SITES)
    study = heart_study(rounds=ROUNDS, min_sites=len(SITES))
    with deployment(kits, tmp_path, sites=SITES, db_url=postgres_url) as running:
        store = running.store
        assert store.engine.dialect.name == "postgresql"
        study_id = submit(store, study)

        info = wait_for_status(store, study_id, "completed", describe=running.describe)

        assert info.last_completed_round == ROUNDS
        rounds = store.list_rounds(study_id)
        assert [r.round for r in rounds] == list(range(ROUNDS + 1))
        for r in rounds[1:]:
            assert r.record["fit"]["num_contributions"] == len(SITES), r.record["fit"]
            assert r.record["fit"]["failed_sites"] == {}
            assert sorted(r.record["evaluate"]["per_site"]) == sorted(SITES)
        tasks = store.list_tasks(study_id)
        kinds = {(t.round, t.kind) for t in tasks}
        assert (0, "stats") in kinds and (ROUNDS, "evaluate") in kinds, sorted(kinds)
        statuses = [(t.round, t.kind, t.site_id, t.status) for t in tasks]
        assert {t.status for t in tasks} == {"replied"}, statuses
        for n in range(ROUNDS + 1):
            replies = store.replies_for_round(study_id, n, 1)
            assert sorted({x.site_id for x in replies}) == sorted(SITES), f"round {n}"
        assert {s.id for s in store.list_sites()} == set(SITES)
        final = final_params(store, study_id)
        assert final.all_finite()
        moved = max(max_abs_diff(final, round_params(store, study_id, 0)).values())
        assert moved > 1e-3, f"the model barely moved ({moved:.2g})"
