"""A fit task's training checkpoint at the site (fedcare.site.train_checkpoint).

The worker is killed (SIGKILL) once a checkpoint of a quarter of the steps is on disk; the
same task in a fresh worker resumes from it (its reply says from which step) and replies with
the update an uninterrupted run gives. A checkpoint of another task, or a corrupt one, is not
resumed; none is left once the reply is produced. Data: the Cleveland part of the UCI
heart-disease mirror.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from fedcare.models.checkpoint import TrainingProgress
from fedcare.models.registry import build_model
from fedcare.models.task_config import spec_from_config
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.site.config import SiteDataConfig
from fedcare.site.train_checkpoint import (
    TaskCheckpoint,
    checkpoint_path,
    open_checkpoint,
    task_key,
)
from fedcare.site.worker import TaskWorker, build_apps
from tests.conftest import require_mirror

SITE, NAME = "cleveland", "heart"
PLAN = {"dataset": NAME, "preprocessing": {"impute": "mean", "scale": "local"}}
LOGISTIC = {"kind": "logistic"}
MLP = {"kind": "torch", "architecture": "mlp", "hidden": [16], "dropout": 0.2}
#: The shape of a row of the heart-disease data (13 features; the site checks it).
FEATURES = (13,)
#: Steps that take about a second here, so that a kill lands well within the training.
STEPS = {"logistic": 30_000, "torch": 600}


def config(every_s: float) -> SiteDataConfig:
    require_mirror()
    entry = {"builtin": "heart-disease", "site": SITE}
    return SiteDataConfig.model_validate({"datasets": {NAME: entry}, "checkpoint_every_s": every_s})


def fit_task(model: dict[str, Any], *, round: int = 1, seed: int = 3, scale: float = 0.0) -> Task:
    params = build_model(model).init_params(FEATURES, np.random.default_rng(0))
    params = params.map(lambda v: v + np.asarray(scale, dtype=v.dtype))
    steps = STEPS[str(model["kind"])]
    training = {"lr": 0.02, "batch_size": 8, "max_steps": steps, "momentum": 0.9, "seed": seed}
    plan = {**PLAN, "model": model}
    return Task("heart-study", round, SITE, "fit", params=params, config=training, plan=plan)


def in_process(task: Task, state: Path, every_s: float = 0.0) -> Reply:
    reply: Reply = build_apps(SITE, config(every_s), state)[NAME](task)
    assert reply.ok, reply.error
    return reply


def saved_step(path: Path) -> int:
    with np.load(path, allow_pickle=False) as saved:
        return int(json.loads(bytes(saved["__meta__"]))["step"])


def killed_mid_training(task: Task, state: Path) -> int:
    """Run ``task`` in a worker and SIGKILL it once a checkpoint of a quarter of its steps is
    on disk; the step of the checkpoint it left."""
    worker = TaskWorker(SITE, config(0.02), state, time_limit=60)
    path = checkpoint_path(state / NAME, task.study_id)
    assert path is not None
    replies: list[Reply] = []
    runner = threading.Thread(target=lambda: replies.append(worker.run(task)))
    runner.start()
    try:
        deadline, quarter = time.monotonic() + 30, int(task.config["max_steps"]) // 4
        while not replies and time.monotonic() < deadline:
            if path.exists() and saved_step(path) >= quarter:
                break
            time.sleep(0.002)
        assert path.exists(), f"no checkpoint appeared; the worker replied {replies}"
        os.kill(worker._proc.pid, signal.SIGKILL)  # the worker process dies mid-training
        runner.join(30)
    finally:
        worker.stop()
    assert replies and replies[0].error is not None, replies
    assert replies[0].error.kind == "worker-crashed"
    return saved_step(path)


def resumed_in_a_fresh_worker(task: Task, state: Path, *, again: bool = False) -> list[Reply]:
    """``task`` in a new worker process, as after an agent restart; ``again``: then once more
    in the same worker (nothing left to resume: an uninterrupted run)."""
    worker = TaskWorker(SITE, config(0.02), state, time_limit=60)
    try:
        return [worker.run(task) for _ in range(2 if again else 1)]
    finally:
        worker.stop()


def assert_same_update(got: Reply, plain: Reply, *, bitwise: bool) -> None:
    assert got.ok and plain.ok, (got.error, plain.error)
    assert got.metrics["num_steps"] == plain.metrics["num_steps"]
    for name in plain.arrays:  # numpy: bitwise; torch: the same float32 operations
        np.testing.assert_allclose(got.arrays[name], plain.arrays[name], rtol=0, atol=1e-6)
    if bitwise:
        assert got.arrays == plain.arrays


class Killed(NamedTuple):
    task: Task
    checkpoint: Path  # a copy of what the killed worker left
    step: int


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Killed:
    """A logistic fit task whose worker was killed mid-training, and its checkpoint."""
    task, state = fit_task(LOGISTIC), tmp_path_factory.mktemp("killed")
    step = killed_mid_training(task, state)
    left = checkpoint_path(state / NAME, task.study_id)
    assert left is not None
    copy = tmp_path_factory.mktemp("pristine") / left.name
    shutil.copy2(left, copy)
    return Killed(task, copy, step)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Reply:
    """The logistic task's reply from an uninterrupted run."""
    return in_process(fit_task(LOGISTIC), tmp_path_factory.mktemp("plain"))


def plant(killed: Killed, state: Path, study_id: str = "heart-study") -> Path:
    """The killed worker's checkpoint where ``study_id``'s would be under ``state``."""
    path = checkpoint_path(state / NAME, study_id)
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(killed.checkpoint, path)
    return path


def test_a_killed_worker_resumes_the_task_to_the_uninterrupted_update(
    killed: Killed, plain: Reply, tmp_path: Path
) -> None:
    assert STEPS["logistic"] // 4 <= killed.step < STEPS["logistic"]
    assert stat.S_IMODE(killed.checkpoint.stat().st_mode) == 0o600  # owner-only, as written
    path = plant(killed, tmp_path)
    [resumed] = resumed_in_a_fresh_worker(killed.task, tmp_path)
    assert resumed.info["resumed_from_step"] == str(killed.step)
    assert "resumed_from_step" not in plain.info
    assert_same_update(resumed, plain, bitwise=True)
    assert not path.exists() and not list(path.parent.glob("train-checkpoint*"))


@pytest.mark.slow  # two workers that import torch: about 8 s on an idle 2-core host
@pytest.mark.torch
def test_a_killed_torch_worker_resumes_with_its_dropout_stream(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    task = fit_task(MLP)
    step = killed_mid_training(task, tmp_path / "site")
    assert STEPS["torch"] // 4 <= step < STEPS["torch"]
    resumed, plain = resumed_in_a_fresh_worker(task, tmp_path / "site", again=True)
    assert resumed.info["resumed_from_step"] == str(step)
    assert "resumed_from_step" not in plain.info
    assert_same_update(resumed, plain, bitwise=False)
    assert not list((tmp_path / "site" / NAME).glob("train-checkpoint*"))


@pytest.mark.parametrize(
    "other",
    [{"round": 2}, {"scale": 0.01}, {"seed": 4}],
    ids=["next-round", "other-params", "other-seed"],
)
def test_a_checkpoint_of_another_task_is_not_resumed(
    killed: Killed, plain: Reply, other: dict[str, Any], tmp_path: Path
) -> None:
    path = plant(killed, tmp_path)
    task = fit_task(LOGISTIC, **other)
    reply = in_process(task, tmp_path, every_s=3600)  # checkpoints on: it looks for one
    assert "resumed_from_step" not in reply.info
    if "round" in other:  # the round changes nothing in training: the same update, from step 0
        assert_same_update(reply, plain, bitwise=True)
    else:
        assert_same_update(reply, in_process(task, tmp_path / "plain"), bitwise=True)
    assert not path.exists()  # the reply is produced: the stale checkpoint goes too


def test_the_same_task_in_process_resumes_from_the_planted_checkpoint(
    killed: Killed, plain: Reply, tmp_path: Path
) -> None:
    """(What makes the test above meaningful: the right task does resume from the file.)"""
    plant(killed, tmp_path)
    reply = in_process(killed.task, tmp_path, every_s=3600)
    assert reply.info["resumed_from_step"] == str(killed.step)
    assert_same_update(reply, plain, bitwise=True)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_checkpoint_is_ignored_with_a_warning(
    killed: Killed, plain: Reply, damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = plant(killed, tmp_path)
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": os.urandom(300), "empty": b""}[damage]
    )
    with caplog.at_level(logging.WARNING, logger="fedcare.site.train_checkpoint"):
        reply = in_process(killed.task, tmp_path, every_s=3600)
    assert "resumed_from_step" not in reply.info
    assert f"training checkpoint {path} is unreadable" in caplog.text
    assert "trains from the start" in caplog.text
    assert_same_update(reply, plain, bitwise=True)
    assert not path.exists()


def test_saves_are_atomic_owner_only_and_read_back(tmp_path: Path) -> None:
    clock = iter([0.0, 0.5, 1.0, 1.5]).__next__
    path = tmp_path / "study" / "train-checkpoint-x.npz"
    checkpoint = TaskCheckpoint(path, "s/1/fit/a", "k" * 64, 1.0, clock=clock)
    assert not checkpoint.due() and checkpoint.due()  # 0.5 s, then 1.0 s after the start
    progress = TrainingProgress(
        step=7,
        rng_start={"bit_generator": "PCG64", "state": {"state": 2**100, "inc": 3}},
        rng_now={"bit_generator": "PCG64", "state": {"state": 5, "inc": 3}},
        arrays={"theta": np.arange(4.0), "optim/0/step": np.float32(7)},
        meta={"loop": "x", "t": 7},
    )
    checkpoint.save(progress)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    back = TaskCheckpoint(path, "s/1/fit/a", "k" * 64, 1.0).load()
    assert back is not None and back.step == 7 and back.meta == {"loop": "x", "t": 7}
    assert back.rng_start == progress.rng_start and back.rng_now == progress.rng_now
    np.testing.assert_array_equal(back.arrays["theta"], np.arange(4.0))
    assert TaskCheckpoint(path, "s/2/fit/a", "k" * 64, 1.0).load() is None  # another task id
    assert TaskCheckpoint(path, "s/1/fit/a", "j" * 64, 1.0).load() is None  # another key
    checkpoint.discard()
    assert not path.exists()


def test_the_interval_is_a_site_data_setting_default_60_s_and_0_turns_it_off(
    killed: Killed, plain: Reply, tmp_path: Path
) -> None:
    assert SiteDataConfig(datasets={}).checkpoint_every_s == 60.0
    with pytest.raises(ValueError, match="checkpoint_every_s"):
        SiteDataConfig.model_validate({"datasets": {}, "checkpoint_every_s": -1})
    assert build_apps(SITE, config(0.5), tmp_path)[NAME].strict.runtime.checkpoint_every_s == 0.5

    def no_key() -> str:
        raise AssertionError("the key is computed only when checkpoints are on")

    task = killed.task
    assert open_checkpoint(tmp_path, task, 0.0, no_key) is None
    assert open_checkpoint(None, task, 60.0, no_key) is None
    on = open_checkpoint(tmp_path, task, 60.0, lambda: "k")
    assert on is not None and on.path == checkpoint_path(tmp_path, task.study_id)
    assert not on.due()
    plant(killed, tmp_path)
    reply = in_process(task, tmp_path, every_s=0.0)  # off: not even resumed
    assert "resumed_from_step" not in reply.info
    assert_same_update(reply, plain, bitwise=True)


def test_a_save_that_fails_costs_the_checkpoint_not_the_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    path = tmp_path / "a-file" / "train-checkpoint-x.npz"
    progress = TrainingProgress(1, {}, {}, {"theta": np.zeros(2)}, {})
    with caplog.at_level(logging.WARNING, logger="fedcare.site.train_checkpoint"):
        TaskCheckpoint(path, "t", "k", 1.0).save(progress)
        TaskCheckpoint(tmp_path / "c.npz", "t", "k", 1.0).save(
            replace(progress, meta={"not-json": object()})
        )
    assert caplog.text.count("not saved") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no temporary file left


def test_the_key_covers_everything_the_training_depends_on() -> None:
    task = fit_task(LOGISTIC)
    spec = spec_from_config(task.config)

    def key(t: Task = task, start: ArrayRecord | None = None, s: Any = spec, fp: str = "d") -> str:
        return task_key(t, t.params if start is None else start, s, fp)

    base = key()
    assert key() == base and len(base) == 64
    control = task.params.zeros_like()
    others = [
        key(replace(task, round=2)),
        key(replace(task, study_id="another")),
        key(replace(task, config={**task.config, "lr": 0.03})),
        key(replace(task, plan={**task.plan, "preprocessing": {"impute": "none"}})),
        key(replace(task, pipeline={"clip": 1.0})),
        key(replace(task, params=task.params.map(lambda v: v + 1e-12))),
        key(replace(task, arrays={"control": control})),
        key(start=task.params.map(lambda v: v + 1.0)),
        key(s=replace(spec, correction=control.map(lambda v: v + 0.5))),
        key(fp="another fingerprint"),
    ]
    assert len({base, *others}) == len(others) + 1


def test_the_site_audit_records_the_step_a_reply_resumed_from() -> None:
    from fedcare.site.mods import audit_mod
    from tests.site.governance_helpers import Recorder

    audit, task = Recorder(), fit_task(LOGISTIC)
    mod = audit_mod(audit)
    for info in ({"resumed_from_step": "7500"}, {}):
        reply = Reply("heart-study", 1, SITE, "fit", info=info)

        def handler(t: Task, reply: Reply = reply) -> Reply:
            return reply

        mod(task, handler)
    sent = [data for event, data in audit.entries if event == "reply-sent"]
    assert sent[0]["resumed_from_step"] == "7500" and "resumed_from_step" not in sent[1]


def test_the_key_is_computed_only_when_a_checkpoint_is_found_or_saved(tmp_path: Path) -> None:
    """Hashing a large task's parameters for the key is a pass over them: a training that
    finds no checkpoint and saves none never pays it."""
    from fedcare.site.train_checkpoint import TaskCheckpoint

    calls: list[int] = []

    def key() -> str:
        calls.append(1)
        return "k"

    from fedcare.models.checkpoint import TrainingProgress

    checkpoint = TaskCheckpoint(tmp_path / "c.npz", "s/1/fit/a", key, 60.0)
    assert checkpoint.load() is None and calls == []
    checkpoint.save(TrainingProgress(step=3, rng_start={}, rng_now={}, arrays={}, meta={}))
    assert calls == [1]  # saved with its key
    again = TaskCheckpoint(tmp_path / "c.npz", "s/1/fit/a", key, 60.0)
    progress = again.load()
    assert progress is not None and progress.step == 3 and calls == [1, 1]  # compared
