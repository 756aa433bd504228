"""A real deployment (coordinator + 4 heart-disease agents over mutual TLS) enforces the study's
epsilon exactly as ``fedcare simulate`` does, and keeps its home owner-only.

* The README's former ``private`` example (epsilon 3 with noise multiplier 1, 20 rounds; one
  round spends 4.73) is refused before round 1 by the coordinator, and the simulation of the
  same study fails with the same :class:`PrivacyBudgetError` message (one guard,
  :mod:`fedcare.privacy.guard`); only the study id in it differs.
* After a study completed, with the coordinator still running (its SQLite WAL open), every
  folder under the coordinator's home is ``0700`` and every file ``0600``: the database and its
  ``-wal``/``-shm``, the artifacts (checkpoints, task and reply payloads), the audit trail.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedcare.errors import PrivacyBudgetError
from fedcare.records.study import StudyConfig

from ..conftest import require_mirror
from .helpers import deployment, heart_study, provision, submit, wait_for_status

pytestmark = pytest.mark.slow

OLD_README_PRIVACY = {
    "mode": "private",
    "epsilon": 3.0,
    "dp": {"noise_multiplier": 1.0, "clip_norm": 0.1, "delta": 1e-5},
}


@dataclass
class Ran:
    home: Path
    refused: StudyConfig
    refused_id: str
    reason: str
    modes: dict[str, int]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    require_mirror()
    root = tmp_path_factory.mktemp("budget-home")
    kits = provision(root / "federation", name="budget-home")
    refused = heart_study(name="heart-private-readme", rounds=20, privacy=OLD_README_PRIVACY)
    with deployment(kits, root) as dep:
        refused_id = submit(dep.store, refused)
        info = wait_for_status(dep.store, refused_id, "failed", describe=dep.describe)
        done_id = submit(dep.store, heart_study(name="heart-open", rounds=2))
        wait_for_status(dep.store, done_id, "completed", describe=dep.describe)
        home = root / "home"
        modes = _modes(root, home)
    yield Ran(home, refused, refused_id, info.reason or "", modes)


def _modes(root: Path, home: Path) -> dict[str, int]:
    """The mode of every file under ``home`` (the running coordinator writes its audit head
    through a temporary file renamed into place: one listed may be gone when it is read)."""
    modes = {}
    for path in [home, *home.rglob("*")]:
        try:
            modes[str(path.relative_to(root))] = path.stat().st_mode
        except FileNotFoundError:
            continue
    return modes


def test_the_coordinator_and_the_simulation_refuse_round_one_alike(ran: Ran) -> None:
    from fedcare.simulation.run import run_simulation

    tail = (
        "round 1 would bring epsilon to 4.73 (privacy.epsilon 3; spent 0 in 0 rounds, "
        "delta 1e-05); the round was not started"
    )
    assert ran.reason.endswith(tail), ran.reason
    assert f"study 'heart-private-readme ({ran.refused_id})': {tail}" in ran.reason
    with pytest.raises(PrivacyBudgetError) as err:
        run_simulation(ran.refused)
    simulated = "heart-private-readme (heart-private-readme/federated)"
    assert str(err.value) == f"study {simulated!r}: {tail}"


def test_the_coordinator_home_is_owner_only(ran: Ran) -> None:
    names = set(ran.modes)
    assert {"home", "home/coordinator.db", "home/coordinator.db-wal", "home/artifacts"} <= names
    assert "home/audit.jsonl" in names
    artifacts = [n for n in names if n.startswith("home/artifacts/") and "/.tmp" not in n]
    assert len(artifacts) > 10, artifacts  # checkpoints, task and reply payloads
    wrong = {
        name: oct(stat.S_IMODE(mode))
        for name, mode in ran.modes.items()
        if stat.S_IMODE(mode) != (0o700 if stat.S_ISDIR(mode) else 0o600)
    }
    assert not wrong, wrong
