"""The site half of secure aggregation (SecAggMod) around a stub training handler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.secure.secagg.messages import ServerMessage
from fedcare.site.secagg import SecAggMod, weighted_vector

HEADER = {
    "study_id": "s",
    "round": 1,
    "threshold": 2,
    "length": 3,
    "clip": 4.0,
    "bits": 20,
    "point": 1,
    "neighbours": {"b": 2},
}


def _train(task: Task) -> Reply:
    assert "secagg" not in task.arrays and "secagg_stage" not in task.config
    update = ArrayRecord({"w": np.array([0.5, -1.0])})
    return Reply(task.study_id, task.round, task.site_id, "fit", arrays=update, num_samples=10)


def _task(round: int, kind: str, msg: ServerMessage, pipeline: dict | None = None) -> Task:
    return Task(
        "s",
        round,
        "a",
        kind,
        config={**msg.config(), "seed": 3},  # type: ignore[arg-type]
        arrays={"secagg": msg.payload},
        pipeline=pipeline or {},
    )


def test_weighted_vector_appends_the_weight() -> None:
    vec = weighted_vector(ArrayRecord({"w": np.array([1.0, 2.0])}), 3.0)
    assert vec.tolist() == [3.0, 6.0, 3.0]


def test_plain_fit_passes_through_and_advertise_persists_owner_only(tmp_path: Path) -> None:
    mod = SecAggMod("a", tmp_path)
    plain = Task("s", 1, "a", "fit")
    assert mod(plain, _train).arrays["w"].tolist() == [0.5, -1.0]
    reply = mod(_task(1, "secagg", ServerMessage("advertise", HEADER)), _train)
    assert reply.ok and sorted(reply.arrays) == ["c_pk", "s_pk"] and reply.num_samples == 0
    (saved,) = tmp_path.glob("secagg-*.json")
    assert saved.stat().st_mode & 0o777 == 0o600
    assert json.loads(saved.read_text())["done"] == "advertise"
    # a new round's advertise forgets the old round's keys, on disk too
    mod(_task(2, "secagg", ServerMessage("advertise", {**HEADER, "round": 2})), _train)
    (only,) = tmp_path.glob("secagg-*.json")
    assert only.name.endswith("-2.json")


def test_stage_in_the_wrong_task_kind_is_refused(tmp_path: Path) -> None:
    mod = SecAggMod("a", tmp_path)
    with pytest.raises(ValidationError, match="stage 'mask' came as a 'secagg' task"):
        mod(_task(1, "secagg", ServerMessage("mask", {})), _train)
    with pytest.raises(ValidationError, match="arrived after stage None"):
        mod(_task(1, "fit", ServerMessage("mask", {}), {"secagg": {"version": 1}}), _train)


def test_unknown_spec_version_is_refused(tmp_path: Path) -> None:
    mod = SecAggMod("a", tmp_path)
    task = _task(1, "fit", ServerMessage("mask", {}), {"secagg": {"version": 7}})
    with pytest.raises(ValidationError, match="speaks version 1"):
        mod(task, _train)
