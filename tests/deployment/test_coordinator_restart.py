"""A coordinator killed mid-study and restarted finishes the study with the same model.

The coordinator runs as a real process (``python -m fedcare coordinator start``) on a SQLite
home; the study is submitted with ``fedcare study submit``. After round 2 is recorded the
coordinator gets SIGKILL (no clean shutdown; a round is usually in flight), then starts again
on the same home and port. The site agents, which only ever dial out, reconnect by themselves
with backoff; the new process resumes the study from its last checkpoint. FedAdam keeps
server optimizer state, so the checkpoint must carry it: the final parameters and every
round's test losses equal those of an uninterrupted run of the same study (simulation).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedcare.coordinator.server import default_db_url
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.store_liveness import task_key
from fedcare.records.study import StudyConfig
from fedcare.simulation.stragglers import Slowdown

from ..conftest import require_mirror
from .helpers import (
    HOSPITALS,
    AgentThreads,
    Kits,
    assert_params_close,
    assert_same_evaluations,
    final_params,
    heart_data,
    heart_study,
    provision,
    simulate,
    wait_for_round,
    wait_for_status,
)
from .processes import Processes, free_port, wait_until_serving

pytestmark = pytest.mark.slow
ROUNDS, KILL_AFTER = 4, 2


@dataclass
class Federation:
    """Kits, a coordinator home on SQLite, its port, child processes and agent threads."""

    kits: Kits
    home: Path
    address: str
    procs: Processes
    agents: AgentThreads
    store: CoordinatorStore

    def start_coordinator(self, name: str) -> None:
        """``fedcare coordinator start`` on the home and port; returns once it serves."""
        self.procs.start(
            name,
            *("coordinator", "start", "--kit", str(self.kits.coordinator)),
            *("--home", str(self.home), "--listen", self.address, "--liveness", "10"),
        )
        wait_until_serving(
            self.kits.sites["va"], self.address, timeout=60, check=lambda: self.procs.check(name)
        )

    def describe(self) -> str:
        return f"{self.agents.describe()}\n{self.procs.describe()}"


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    require_mirror()
    home = tmp_path / "home"
    home.mkdir()
    store = CoordinatorStore(default_db_url(home), home / "artifacts")  # migrates, as demo does
    fed = Federation(
        provision(tmp_path / "federation"),
        home,
        f"127.0.0.1:{free_port()}",
        Processes(tmp_path / "logs"),
        AgentThreads(),
        store,
    )
    try:
        yield fed
    finally:
        fed.agents.stop.set()
        fed.procs.stop_all()
        fed.agents.close()
        store.close()


QUEUE = ("--queue", "--home")


def _submit_with_the_cli(study: StudyConfig, fed: Federation) -> subprocess.Popen[str]:
    """``fedcare study submit STUDY --home HOME --queue``, started now (the coordinator and its
    sites may not be up yet: ``--queue``); its stdout is the study id."""
    path = fed.home.parent / "study.yaml"
    path.write_text(yaml.safe_dump(study.model_dump(mode="json")))
    return subprocess.Popen(
        [sys.executable, "-m", "fedcare", "study", "submit", str(path), *QUEUE, str(fed.home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_coordinator_killed_mid_study_resumes_and_gives_the_same_model(
    federation: Federation,
) -> None:
    fed, store = federation, federation.store
    study = heart_study(strategy={"name": "fedadam", "options": {"server_lr": 0.05}}, rounds=ROUNDS)
    submitting = _submit_with_the_cli(study, fed)  # queued while the coordinator starts
    try:
        fed.start_coordinator("coordinator-1")
        for site in HOSPITALS:
            fed.agents.start(
                fed.kits.sites[site],
                heart_data(site),
                address=fed.address,
                state_dir=fed.home.parent / "state" / site,
            )
        out, err = submitting.communicate(timeout=120)
    finally:
        if submitting.poll() is None:
            submitting.kill()
            submitting.communicate()
    assert submitting.returncode == 0, err
    study_id = out.strip().splitlines()[-1]

    wait_for_round(store, study_id, KILL_AFTER, describe=fed.describe, check=fed.procs.check)
    assert fed.procs.kill("coordinator-1") == -signal.SIGKILL
    at_kill = store.get_study(study_id)
    assert at_kill.status == "running" and at_kill.last_completed_round is not None
    assert at_kill.last_completed_round < ROUNDS, "the study ended before the kill"

    fed.start_coordinator("coordinator-2")
    info = wait_for_status(
        store, study_id, "completed", describe=fed.describe,
        check=lambda: fed.procs.check("coordinator-2"),
    )  # fmt: skip

    assert info.last_completed_round == ROUNDS
    rounds = store.list_rounds(study_id)
    assert [r.round for r in rounds] == list(range(ROUNDS + 1))
    for r in rounds[1:]:
        assert r.record["fit"]["num_contributions"] == len(HOSPITALS), r.record["fit"]
    simulated = simulate(study)
    assert_params_close(
        final_params(store, study_id), simulated.params, what="resumed deployment vs simulation"
    )
    assert_same_evaluations(store, study_id, simulated)
    assert not fed.agents.errors, fed.describe()


def _unstepped(store: CoordinatorStore, study_id: str) -> set[str]:
    """The keys of the fit tasks answered after the study's last persisted step."""
    last = store.get_study(study_id).last_completed_round
    if last is None:
        return set()
    since = store.get_round(study_id, last).completed_at
    fits = [t.id for t in store.list_tasks(study_id) if t.kind == "fit"]
    return {
        task_key(task)
        for task, reply in store.task_replies(fits)
        if reply is not None and reply.ok and reply.received_at > since
    }


def test_a_fedbuff_study_killed_mid_study_resumes_from_its_last_persisted_version(
    federation: Federation,
) -> None:
    """FedBuff keeps tasks of several versions open: after the kill, the new process resumes
    from the last persisted step and closes the tasks the killed one left open (a reply to
    one is refused and recorded, never buffered). The kill lands once an update arrived
    after the last step: received, in no step, it goes into the resumed run's next step."""
    fed, store = federation, federation.store
    steps = 8
    options = {"buffer_size": 3, "concurrency": 3}
    study = heart_study(
        strategy={"name": "fedbuff", "options": options}, rounds=steps, evaluate_every=0
    )
    fed.start_coordinator("coordinator-1")
    for site in HOSPITALS:  # each fit takes 0.4 s more, so the kill lands mid-study
        fed.agents.start(
            fed.kits.sites[site],
            heart_data(site),
            address=fed.address,
            state_dir=fed.home.parent / "state" / site,
            mods=[Slowdown(1.0, extra_s=0.4)],
        )
    study_id = store.create_study(study.name, study.model_dump(mode="json"), study.seed)
    wait_for_round(store, study_id, KILL_AFTER, describe=fed.describe, check=fed.procs.check)
    end = time.monotonic() + 30
    while not _unstepped(store, study_id) and time.monotonic() < end:
        time.sleep(0.02)  # until an update arrived after the last step
    assert fed.procs.kill("coordinator-1") == -signal.SIGKILL
    left_open = [t for t in store.list_tasks(study_id) if t.status in ("pending", "delivered")]
    at_kill = store.get_study(study_id).last_completed_round
    assert left_open and at_kill is not None and at_kill < steps, fed.describe()
    unstepped = _unstepped(store, study_id)
    assert unstepped, fed.describe()

    fed.start_coordinator("coordinator-2")
    info = wait_for_status(
        store, study_id, "completed", describe=fed.describe,
        check=lambda: fed.procs.check("coordinator-2"),
    )  # fmt: skip
    assert info.last_completed_round == steps
    rounds = store.list_rounds(study_id)
    assert [r.round for r in rounds] == list(range(steps + 1))
    resumed = [r.record["fit"] for r in rounds if r.round > at_kill]
    taken = [c for f in resumed for c in f["contributions"]]
    assert all(c["sent_version"] >= at_kill for c in taken if not c["restored"]), resumed
    assert all(f["num_contributions"] == 3 for f in resumed), resumed
    # updates received before the kill but in no step are taken after it, each once
    keys = {task_key(t): t for t in store.list_tasks(study_id)}
    restored = [c for c in taken if c["restored"]]
    assert all(keys[c["task"]].status == "replied" for c in restored), resumed
    assert unstepped <= {c["task"] for c in restored}, (unstepped, resumed)
    every = [c["task"] for r in rounds[1:] for c in r.record["fit"]["contributions"]]
    assert len(every) == len(set(every)), rounds
    params = final_params(store, study_id)
    assert all(np.isfinite(a).all() for a in params.values())
    for task in (store.get_task(t.id) for t in left_open):  # closed, or answered on reconnect
        assert task.status in ("expired", "replied", "failed"), task
        assert task.status != "expired" or task.closed_at is not None, task
    assert not fed.agents.errors, fed.describe()
