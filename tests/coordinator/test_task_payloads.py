"""A round's task payloads: one stored body for the tasks that share their parameters."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fedcare.coordinator import CoordinatorStore
from fedcare.coordinator.artifacts import ArtifactStore
from fedcare.coordinator.grid import CoordinatorGrid
from fedcare.coordinator.hub import Hub
from fedcare.coordinator.task_payloads import region_key, store_task_payloads
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Task
from fedcare.transport.framed import frame_task

from .helpers import running_study

SITES = ("north", "south", "east", "west")
RNG = np.random.default_rng(3)
PARAMS = ArrayRecord(
    {"w": RNG.normal(size=(500, 1000)).astype(np.float32), "b": np.arange(7, dtype=np.int64)}
)


def _tasks(params: ArrayRecord = PARAMS, round_: int = 1) -> list[Task]:
    return [
        Task("s", round_, site, "fit", params=params, config={"seed": i, "lr": 0.1})
        for i, site in enumerate(SITES)
    ]


def _files(artifacts: ArtifactStore) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in artifacts.root.rglob("*") if p.is_file()}


def _disk(artifacts: ArtifactStore) -> int:
    return sum(p.stat().st_size for p in _files(artifacts))


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def test_a_rounds_tasks_share_one_body_and_read_back_byte_for_byte(
    artifacts: ArtifactStore,
) -> None:
    tasks = _tasks()
    digests = store_task_payloads(artifacts, tasks)
    one = frame_task(tasks[0]).size
    for task, digest in zip(tasks, digests, strict=True):
        wire = frame_task(task).to_bytes()
        assert digest == hashlib.sha256(wire).hexdigest()
        assert artifacts.is_composite(digest) and artifacts.get(digest) == wire
        assert b"".join(artifacts.pieces(digest).blocks()) == wire
    assert len(set(digests)) == len(SITES)
    assert len([p for p in _files(artifacts) if p.name.endswith(".body")]) == 1
    assert one < _disk(artifacts) < one + 16_384  # not four copies of the parameters


def test_tasks_whose_arrays_are_not_the_same_objects_are_stored_whole(
    artifacts: ArtifactStore,
) -> None:
    copies = [
        Task("s", 1, site, "fit", params=ArrayRecord({k: v.copy() for k, v in PARAMS.items()}))
        for site in SITES[:2]
    ]
    big_endian = ArrayRecord({"w": PARAMS["w"].astype(">f4")})
    swapped = [Task("s", 1, site, "fit", params=big_endian) for site in SITES[2:]]
    assert region_key(frame_task(swapped[0])) is None  # converted for the wire: a copy
    assert region_key(frame_task(Task("s", 1, "x", "fit"))) is None  # no arrays
    tasks = copies + swapped
    digests = store_task_payloads(artifacts, tasks)
    for task, digest in zip(tasks, digests, strict=True):
        assert not artifacts.is_composite(digest)
        assert artifacts.path(digest).read_bytes() == frame_task(task).to_bytes()
    assert not [p for p in _files(artifacts) if p.name.endswith(".body")]


def test_one_call_mixes_shared_and_whole_payloads(artifacts: ArtifactStore) -> None:
    other = Task("s", 1, "lone", "evaluate", params=ArrayRecord({"w": np.ones(3)}))
    tasks = [*_tasks()[:2], other]
    digests = store_task_payloads(artifacts, tasks)
    assert [artifacts.is_composite(d) for d in digests] == [True, True, False]
    assert [artifacts.get(d) for d in digests] == [frame_task(t).to_bytes() for t in tasks]


@pytest.mark.parametrize("redo", [False, True])
def test_the_same_tasks_again_are_not_written_again(artifacts: ArtifactStore, redo: bool) -> None:
    digests = store_task_payloads(artifacts, _tasks())
    before = _files(artifacts)
    assert store_task_payloads(artifacts, _tasks(), redo=redo) == digests
    assert _files(artifacts) == before  # same files, none rewritten


def test_a_redo_with_a_lost_body_stores_it_again(artifacts: ArtifactStore) -> None:
    digests = store_task_payloads(artifacts, _tasks())
    for path in _files(artifacts):
        if path.name.endswith(".body"):
            path.unlink()
    assert not artifacts.holds(digests[0], frame_task(_tasks()[0]).size)
    assert store_task_payloads(artifacts, _tasks(), redo=True) == digests
    assert artifacts.get(digests[3]) == frame_task(_tasks()[3]).to_bytes()


def test_the_grid_stores_a_rounds_tasks_with_one_body(store: CoordinatorStore) -> None:
    sid = running_study(store, *SITES)
    grid = CoordinatorGrid(store, store.artifacts, Hub(), sid, "d", default_timeout=5.0)
    tasks = [
        Task(sid, 1, site, "fit", params=PARAMS, config={"seed": i}) for i, site in enumerate(SITES)
    ]
    # No site offers dataset "d": the grid stops waiting at once, the tasks are stored.
    assert list(grid.send_and_receive(tasks)) == []
    rows = {t.site_id: t for t in store.list_tasks(sid, 1)}
    for task in tasks:
        digest = rows[task.site_id].payload_digest
        assert digest is not None and store.artifacts.is_composite(digest)
        assert store.artifacts.get(digest) == frame_task(task).to_bytes()
    bodies = [p for p in store.artifacts.root.rglob("*.body")]
    assert len(bodies) == 1 and bodies[0].stat().st_size == frame_task(tasks[0]).size - len(
        frame_task(tasks[0]).header
    )
