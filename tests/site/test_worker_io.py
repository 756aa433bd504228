"""The agent hands its worker subprocess a task by file and gets the reply by file.

Real :class:`TaskWorker` subprocesses (spawned; the sandboxed one is in
``test_sandbox_worker.py``, whose analytics tasks go the same way) on the fixture federation's
south table: a fit task through the worker gives exactly the reply the same handler gives in
process; a task the agent offers by its file is read from that file, also when governance mods
changed its plan (which travels beside the path); the hand-over files are removed; a task file
the worker cannot read is a ``worker-io`` error and the worker serves the next task; the time
limit still kills a worker that runs past it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedcare.records.messages import Reply, Task
from fedcare.site.config import SiteDataConfig
from fedcare.site.worker import TaskWorker, build_apps
from fedcare.site.worker_io import IO_KIND
from fedcare.strategy.plan import plan_for_study
from fedcare.transport.framed import frame_task, read_reply, write_file

from .test_row_skips import _site, _study, _task

pytestmark = pytest.mark.slow


def _fit(tmp_path: Path) -> tuple[SiteDataConfig, Task]:
    config = SiteDataConfig.from_yaml(_site(tmp_path, bad_ages=0, bad_glucose=0, bad_lines=0))
    return config, _task(plan_for_study(_study(None)))


def _same(a: Reply, b: Reply) -> None:
    assert a.error is None and b.error is None, (a.error, b.error)
    assert (a.study_id, a.site_id, a.kind) == (b.study_id, b.site_id, b.kind)
    assert (a.round, a.num_samples, a.metrics) == (b.round, b.num_samples, b.metrics)
    assert list(a.arrays) == list(b.arrays)
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name])


def test_a_task_by_file_gives_the_reply_the_handler_gives_in_process(tmp_path: Path) -> None:
    config, task = _fit(tmp_path)
    expected = build_apps("south", config, tmp_path / "in-process")["fixture"](task)
    worker = TaskWorker("south", config, tmp_path / "state", time_limit=120)
    try:
        got = worker.run(task)
        assert not list(worker.io_dir.iterdir())  # its task and reply files are removed
        # a task the agent offers with its (downloaded) file is read from that file
        offered = replace(task, round=7)
        path = tmp_path / "state" / "transfers" / "task.fcf"
        write_file(frame_task(offered), path)
        worker.offer_file(task, path)  # the file holds round 7; the object says round 1
        from_file = worker.run(task)
        assert path.exists()  # the offered file is the agent's: left where it is
        # a governance mod's copy (another plan, the same arrays) is still read from the file
        changed = replace(task, plan={**task.plan, "dataset": "elsewhere"})
        moved = worker.run(changed)
        assert not list(worker.io_dir.iterdir())  # no task file of its own was written
    finally:
        worker.stop()
    _same(expected, got)
    assert from_file.round == 7 and from_file.error is None
    assert moved.round == 7 and moved.error is not None
    assert moved.error.kind == "unknown-dataset" and "'elsewhere'" in moved.error.message
    assert got.arrays["weight"].shape == (4,) and np.abs(got.arrays["weight"]).sum() > 0


def test_an_unreadable_task_file_is_a_worker_io_error_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    config, task = _fit(tmp_path)
    worker = TaskWorker("south", config, tmp_path / "state", time_limit=120)
    try:
        broken = tmp_path / "state" / "transfers" / "broken.fcf"
        broken.write_bytes(b"FCF1" + b"\xff" * 20)
        worker.offer_file(task, broken)
        refused = worker.run(task)
        pid = worker._proc.pid
        worker.offer_file(task, None)
        after = worker.run(task)
        assert worker._proc.pid == pid  # the same worker served both
    finally:
        worker.stop()
    assert refused.error is not None and refused.error.kind == IO_KIND
    assert (
        "cannot read its task file" in refused.error.message
        and str(broken) in refused.error.message
    )
    assert after.error is None and after.num_samples > 0


def test_a_worker_past_the_time_limit_is_killed_and_the_next_task_gets_a_fresh_one(
    tmp_path: Path,
) -> None:
    config, task = _fit(tmp_path)
    worker = TaskWorker("south", config, tmp_path / "state", time_limit=0.05)
    try:
        late = worker.run(task)  # starting the worker alone takes longer
        assert worker._proc is None  # killed
        worker.time_limit = 120
        again = worker.run(task)
        assert not list(worker.io_dir.iterdir())
    finally:
        worker.stop()
    assert late.error is not None and late.error.kind == "timeout"
    assert "time limit of 0.05 s" in late.error.message
    assert again.error is None


def test_a_reply_the_agent_keeps_is_moved_out_of_the_worker_folder(tmp_path: Path) -> None:
    """With ``keep_reply`` (an agent that stages the reply) the worker's reply file is moved to
    that path, not removed: the reply's arrays are that file's map, and a worker's next start
    (which clears its folder) leaves it alone."""
    config, task = _fit(tmp_path)
    worker = TaskWorker("south", config, tmp_path / "state", time_limit=120)
    body = tmp_path / "state" / "transfers" / "reply-body.fcf"
    path = tmp_path / "state" / "transfers" / "task.fcf"
    write_file(frame_task(task), path)
    try:
        worker.offer_file(task, path, body)
        got = worker.run(task)
        kept = worker.take_kept()
        assert worker.take_kept() is None  # handed over once
        worker.offer_file(task, None)
        plain = worker.run(task)  # not kept: removed as before
        assert worker.take_kept() is None and not list(worker.io_dir.iterdir())
        worker.stop()
        again = worker.run(task)  # a new worker: its folder is cleared
    finally:
        worker.stop()
    assert kept is not None and kept.reply is got and kept.path == body and body.exists()
    assert not got.arrays["weight"].flags.writeable  # a view of the kept file's map
    _same(read_reply(body), got)
    _same(plain, got)
    assert again.error is None
