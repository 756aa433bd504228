"""A site killed mid-study: the study finishes with the remaining sites.

Heart-disease site agents run as real processes (``python -m fedcare site start``) against a
real coordinator.

- Killed for good: the study needs 3 of 4 sites per round and waits 5 s for replies. After
  round 1 (which all 4 sites answered) one agent gets SIGKILL. Its next task goes unanswered,
  the round proceeds at the deadline with the 3 others, and once the dead site has been silent
  longer than the coordinator's liveness window it is no longer sent tasks at all.
- Killed and restarted at once, well within the liveness window, while it holds a task: the
  study has no ``round_timeout`` (its default deadline is half an hour). Since protocol 1.2 the
  agent keeps the task it holds on disk (``STATE/transfers/held.json``, in phase download, run
  or upload: :mod:`fedcare.site.held`), so the restarted agent's Hello lists it, the agent
  goes on with it (downloads the rest, runs it again, or uploads the rest of its reply) and
  answers it: the task is not failed and the round goes on at once, with the site in it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fedcare.coordinator.rows import RoundInfo, TaskInfo
from fedcare.coordinator.server import Coordinator
from fedcare.coordinator.store import CoordinatorStore
from fedcare.records.study import TASK_DEADLINE_FLOOR_S

from ..conftest import require_mirror
from .helpers import (
    HOSPITALS,
    Kits,
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


def _start_site(
    procs: Processes, name: str, site: str, root: Path, kits: Kits, coordinator: Coordinator
) -> None:
    procs.start(
        name,
        *("site", "start", "--kit", str(kits.sites[site])),
        *("--data", str(write_heart_data(site, root / "data"))),
        *("--state", str(root / "state" / site)),
        *("--coordinator", f"127.0.0.1:{coordinator.port}"),
        "--approve-all",  # governance is tested in test_governance.py
    )


@contextmanager
def _federation(
    root: Path, sites: tuple[str, ...], liveness_s: float
) -> Iterator[tuple[Coordinator, Processes, Kits]]:
    """A coordinator and one ``fedcare site start`` process per hospital in ``sites``."""
    require_mirror()
    kits = provision(root / "federation", sites)
    procs = Processes(root / "logs")
    with running_coordinator(kits, root / "home", liveness_s=liveness_s) as coordinator:
        try:
            for site in sites:
                _start_site(procs, site, site, root, kits, coordinator)
            yield coordinator, procs, kits
        finally:
            procs.terminate()
            coordinator.stop()  # ends the agents' long-polls, so they exit at once
            procs.stop_all()


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[tuple[Coordinator, Processes]]:
    """A coordinator (liveness 4 s) and one ``fedcare site start`` process per hospital."""
    with _federation(tmp_path, HOSPITALS, liveness_s=4.0) as (coordinator, procs, _):
        yield coordinator, procs


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


RESTART_SITES = ("cleveland", "hungary", VICTIM)


def test_a_site_killed_and_restarted_holding_a_task_resumes_and_answers_it(
    tmp_path: Path,
) -> None:
    with _federation(tmp_path, RESTART_SITES, liveness_s=60.0) as (coordinator, procs, kits):
        store = coordinator.store
        study = heart_study(rounds=6, min_sites=2, training={"epochs": 5, "batch_size": 8})
        assert study.round_timeout is None and study.task_deadline_s == TASK_DEADLINE_FLOOR_S
        study_id = submit(store, study)
        held_file = tmp_path / "state" / VICTIM / "transfers" / "held.json"
        held = _freeze_while_holding(store, study_id, procs, held_file)
        phase = json.loads(held_file.read_text())["phase"]  # what the restarted agent resumes
        os.killpg(procs.procs[VICTIM].pid, signal.SIGKILL)  # the agent and its worker
        procs.procs[VICTIM].wait(timeout=30)
        killed = time.monotonic()
        _start_site(procs, f"{VICTIM}-restarted", VICTIM, tmp_path, kits, coordinator)
        wait_for_status(
            store, study_id, "completed", timeout=240, describe=procs.describe,
            check=lambda: procs.check(*RESTART_SITES[:2], f"{VICTIM}-restarted"),
        )  # fmt: skip
        took = time.monotonic() - killed
        rounds = store.list_rounds(study_id)

    story = f"killed holding {held.kind} of round {held.round} in phase {phase}\n{_story(rounds)}"
    assert took < TASK_DEADLINE_FLOOR_S / 10, f"the study waited {took:.0f} s\n{story}"
    stage = "fit" if held.kind == "fit" else "evaluate"
    record = next(r.record for r in rounds if r.round == held.round)
    assert VICTIM not in ((record.get(stage) or {}).get("failed_sites") or {}), story
    assert [t.status for t in store.list_tasks(study_id) if t.id == held.id] == ["replied"], story
    if stage == "fit":  # the task it resumed is in the aggregate
        assert VICTIM in contributors(record), story
    assert VICTIM in contributors(rounds[-1].record), f"the restarted site is back\n{story}"
    assert not held_file.exists(), "the answered task's files are removed"


def _freeze_while_holding(
    store: CoordinatorStore, study_id: str, procs: Processes, held_file: Path
) -> TaskInfo:
    """SIGSTOP the victim's agent (and worker) while it holds a delivered fit/evaluate task
    that its ``held_file`` names (the agent wrote it when the task's download began)."""
    group = procs.procs[VICTIM].pid
    end = time.monotonic() + 180
    while time.monotonic() < end:
        procs.check()
        delivered = [
            t for t in store.list_tasks(study_id)
            if t.site_id == VICTIM and t.status == "delivered" and t.kind in ("fit", "evaluate")
        ]  # fmt: skip
        if delivered and _names(held_file, delivered[0]):
            os.killpg(group, signal.SIGSTOP)
            [now] = [t for t in store.list_tasks(study_id) if t.id == delivered[0].id]
            if now.status == "delivered":
                return now  # frozen before it answered: it holds the task
            os.killpg(group, signal.SIGCONT)  # it answered in between; catch the next one
        time.sleep(0.005)
    pytest.fail(f"{VICTIM} was never caught holding a task\n{procs.describe()}")


def _names(held_file: Path, task: TaskInfo) -> bool:
    """Whether the agent's held-task record names ``task``."""
    try:
        record = json.loads(held_file.read_text())
    except (OSError, ValueError):
        return False
    return bool(record.get("task") == f"{task.study_id}/{task.round}/{task.kind}/{task.site_id}")
