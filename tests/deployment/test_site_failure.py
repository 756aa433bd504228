"""A site killed mid-study: the study finishes with the remaining sites.

Four heart-disease site agents run as real processes (``python -m fedcare site start``)
against a real coordinator; the study needs 3 sites per round and waits 5 s for replies.
After round 1 (which all 4 sites answered) one agent gets SIGKILL. Its next task goes
unanswered, the round proceeds at the deadline with the 3 others, and once the dead site has
been silent longer than the coordinator's liveness window it is no longer sent tasks at all.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fedcare.coordinator.rows import RoundInfo
from fedcare.coordinator.server import Coordinator
from fedcare.coordinator.store import CoordinatorStore

from ..conftest import require_mirror
from .helpers import (
    HOSPITALS,
    contributors,
    heart_study,
    provision,
    running_coordinator,
    submit,
    wait_for_round,
    wait_for_status,
    write_heart_data,
)
from .processes import Processes

pytestmark = pytest.mark.slow
VICTIM, ROUNDS = "va", 4
SURVIVORS = sorted(set(HOSPITALS) - {VICTIM})


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[tuple[Coordinator, Processes]]:
    """A coordinator (liveness 4 s) and one ``fedcare site start`` process per hospital."""
    require_mirror()
    kits = provision(tmp_path / "federation")
    procs = Processes(tmp_path / "logs")
    with running_coordinator(kits, tmp_path / "home", liveness_s=4.0) as coordinator:
        try:
            for site in HOSPITALS:
                procs.start(
                    site,
                    *("site", "start", "--kit", str(kits.sites[site])),
                    *("--data", str(write_heart_data(site, tmp_path / "data"))),
                    *("--state", str(tmp_path / "state" / site)),
                    *("--coordinator", f"127.0.0.1:{coordinator.port}"),
                    "--approve-all",  # governance is tested in test_governance.py
                )
            yield coordinator, procs
        finally:
            procs.terminate()
            coordinator.stop()  # ends the agents' long-polls, so they exit at once
            procs.stop_all()


def _story(rounds: list[RoundInfo]) -> str:
    return "\n".join(
        f"round {r.round}: sampled {r.record['fit'].get('sampled_sites')} "
        f"fit failures {r.record['fit'].get('failed_sites')} "
        f"evaluate failures {(r.record.get('evaluate') or {}).get('failed_sites')}"
        for r in rounds
        if r.round > 0
    )


def _configured_after(store: CoordinatorStore, r: RoundInfo, when: datetime) -> bool:
    """Whether the attempt that completed round ``r`` sent its fit tasks after ``when``."""
    fit = [t for t in store.list_tasks(r.study_id, r.round) if t.kind == "fit"]
    attempt = max(t.attempt for t in fit)
    return all(t.created_at > when for t in fit if t.attempt == attempt)


def test_a_site_killed_mid_study_leaves_the_others_to_finish(
    federation: tuple[Coordinator, Processes],
) -> None:
    coordinator, procs = federation
    store = coordinator.store
    study_id = submit(store, heart_study(rounds=ROUNDS, min_sites=3, round_timeout=5.0))
    wait_for_round(store, study_id, 1, describe=procs.describe, check=procs.check)

    killed_at = datetime.now(timezone.utc)
    assert procs.kill(VICTIM) == -signal.SIGKILL
    wait_for_status(
        store, study_id, "completed", describe=procs.describe,
        check=lambda: procs.check(*SURVIVORS),
    )  # fmt: skip

    rounds = store.list_rounds(study_id)
    story = _story(rounds)
    assert [r.round for r in rounds] == list(range(ROUNDS + 1)), story
    assert contributors(rounds[1].record) == sorted(HOSPITALS), story
    after_kill = [r for r in rounds[1:] if _configured_after(store, r, killed_at)]
    assert after_kill and after_kill[-1].round == ROUNDS, story
    for r in after_kill:
        assert contributors(r.record) == SURVIVORS, story
        assert r.record["fit"]["num_contributions"] == len(SURVIVORS), story
    missed = [
        (r.round, stage)
        for r in rounds[1:]
        for stage in ("fit", "evaluate")
        if "no reply before the deadline"
        in ((r.record.get(stage) or {}).get("failed_sites") or {}).get(VICTIM, "")
    ]
    assert missed, f"no round waited for the killed site\n{story}"
    final = rounds[-1].record
    assert VICTIM not in final["fit"]["sampled_sites"], f"still sent tasks\n{story}"
    assert sorted(final["evaluate"]["per_site"]) == SURVIVORS, story
