"""Replies through shared-memory slots: the same bits, reused only when free, nothing left over."""

from __future__ import annotations

import fcntl
import gc
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedcare.data.synthetic import load_synthetic
from fedcare.records import Reply, Task
from fedcare.records.arrays import ArrayRecord
from fedcare.records.pages import mmap_of
from fedcare.records.study import StudyConfig
from fedcare.simulation.parallel import ParallelGrid
from fedcare.simulation.reply_slots import (
    MIN_BYTES,
    PREFIX,
    SLOTS,
    ReplySlots,
    SlotWriter,
    remove_orphans,
)
from fedcare.simulation.training import grid_for, train_on_grid
from fedcare.site.app import Handler

N = 100_000  # float64 weights: 800 kB, well over MIN_BYTES


class Echo:
    """A site mod that replies with a copy of the params its task carried (picklable)."""

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        arrays = ArrayRecord({"weight": task.params["weight"] + 0.0})
        return Reply(task.study_id, task.round, task.site_id, task.kind, arrays, num_samples=1)


def _sites(n: int) -> list:
    return list(load_synthetic(num_sites=n, n_features=2, rows_per_site=4).sites)


def _tasks(grid: ParallelGrid, rnd: int, weight: np.ndarray) -> list[Task]:
    params = ArrayRecord({"weight": weight})
    return [
        Task("t/slots", rnd, s, "fit", params=params) for s in grid.site_ids()
    ]  # one params record: each worker is sent it once


def _reply(arrays: dict[str, np.ndarray], error: bool = False) -> Reply:
    reply = Reply("t", 1, "a", "fit", ArrayRecord(arrays), num_samples=3, metrics={"m": 1.5})
    if error:
        return Reply.failure(Task("t", 1, "a", "fit"), "exception", "boom")
    return reply


def test_a_slot_carries_every_dtype_and_shape_bit_for_bit() -> None:
    slots = ReplySlots(mp.get_context("spawn"), 1)
    writer = SlotWriter(*slots.writer_args(0))
    nan = np.array([np.nan, -0.0, np.inf], np.float32)
    nan.view(np.uint32)[0] |= 0x1234  # a NaN with a payload: copied bits, not values
    arrays = {
        "big": np.arange(30_000, dtype=np.float64).reshape(100, 300),
        "nan": nan,
        "ints": np.arange(-5, 6, dtype=np.int16),
        "scalar": np.array(7.25, np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "strided": np.arange(2_000.0)[::2],
    }
    try:
        header, layout = writer.pack(_reply(arrays))
        assert layout is not None and len(header.arrays) == 0
        slots.seen(0)
        got = slots.unpack(0, header, layout)
        assert (got.num_samples, got.metrics, got.site_id) == (3, {"m": 1.5}, "a")
        assert list(got.arrays) == list(arrays)
        for name, want in arrays.items():
            have = got.arrays[name]
            assert have.dtype == want.dtype and have.shape == want.shape
            assert np.ascontiguousarray(want).tobytes() == have.tobytes(), name
            assert not have.flags.owndata and not have.flags.writeable
            assert have.base is got.arrays["big"].base  # one base per reply: the slot's view
        small, no_slot = writer.pack(_reply({"w": np.zeros(MIN_BYTES // 8 - 1)}))
        assert no_slot is None and len(small.arrays) == 1  # small: the pipe, whole
        failed, no_slot = writer.pack(_reply(arrays, error=True))
        assert no_slot is None and failed.error is not None
    finally:
        slots.close()
    assert not slots.folder.exists()
    np.testing.assert_array_equal(got.arrays["big"], arrays["big"])  # mapped after close


def test_a_held_reply_keeps_its_slot_and_a_dropped_one_frees_it() -> None:
    slots = ReplySlots(mp.get_context("spawn"), 1)
    writer = SlotWriter(*slots.writer_args(0))
    try:
        held = []
        for i in range(SLOTS + 2):
            header, layout = writer.pack(_reply({"w": np.full(N, float(i))}))
            slots.seen(0)  # read: the writer never waits on one not read
            held.append(slots.unpack(0, header, layout) if layout is not None else header)
            assert (layout is None) == (i >= SLOTS)  # all slots held: the pipe
        assert list(slots.flags[0]) == [1] * SLOTS
        for i, reply in enumerate(held):  # no slot was written while its reply was held
            np.testing.assert_array_equal(reply.arrays["w"], np.full(N, float(i)))
        first_slot_name = writer.names[0]
        del held[0], reply
        gc.collect()
        assert list(slots.flags[0]) == [0] + [1] * (SLOTS - 1)
        header, layout = writer.pack(_reply({"w": np.full(2 * N, 9.0)}))  # bigger: it grows
        assert layout is not None and layout.slot == 0 and writer.names[0] != first_slot_name
        slots.seen(0)
        again = slots.unpack(0, header, layout)
        np.testing.assert_array_equal(again.arrays["w"], np.full(2 * N, 9.0))
        for i, reply in enumerate(held, start=1):
            np.testing.assert_array_equal(reply.arrays["w"], np.full(N, float(i)))
    finally:
        slots.close()


def test_a_writer_waits_for_a_slot_while_the_parent_has_replies_to_read() -> None:
    slots = ReplySlots(mp.get_context("spawn"), 1)
    writer = SlotWriter(*slots.writer_args(0))
    try:
        layouts = [writer.pack(_reply({"w": np.full(N, float(i))}))[1] for i in range(SLOTS)]
        assert all(layout is not None for layout in layouts)  # none read yet
        freed = threading.Timer(0.2, slots.drop, (0, layouts[2]))
        freed.start()
        start = time.monotonic()
        _, layout = writer.pack(_reply({"w": np.full(N, 9.0)}))
        assert layout is not None and layout.slot == 2  # waited for it, not the pipe
        assert time.monotonic() - start >= 0.15
        freed.join()
    finally:
        slots.close()


def test_replies_come_through_slots_and_are_reused_once_dropped() -> None:
    with ParallelGrid(_sites(8), workers=1, mods={f"site-{i}": [Echo()] for i in range(8)}) as grid:
        slots = grid._pool.slots
        first = np.arange(N, dtype=np.float64)
        held = list(grid.send_and_receive(_tasks(grid, 1, first)))  # all kept: slots, then pipe
        assert slots.mapped == SLOTS and len(held) == 8
        assert os.listdir(slots.folder) == []  # params and replies: mapped and removed
        for reply in held:
            assert reply.error is None, reply.error
            np.testing.assert_array_equal(reply.arrays["weight"], first)
        via_slot = [r for r in held if mmap_of(r.arrays["weight"]) is not None]
        assert len(via_slot) == SLOTS  # views of a mapped slot; the others were unpickled
        second = -first
        for reply in grid.send_and_receive(_tasks(grid, 2, second)):  # none free: the pipe
            np.testing.assert_array_equal(reply.arrays["weight"], second)
        assert slots.mapped == SLOTS
        for reply in held:  # still the first call's bits: no held slot was written
            np.testing.assert_array_equal(reply.arrays["weight"], first)
        del held, via_slot, reply
        gc.collect()
        for reply in grid.send_and_receive(_tasks(grid, 3, first + 1)):  # streamed: all slots
            np.testing.assert_array_equal(reply.arrays["weight"], first + 1)
        assert slots.mapped == SLOTS + 8


class Slow:
    """A site mod that answers after 30 s (picklable)."""

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        time.sleep(30)
        return next_handler(task)


def test_no_shared_memory_is_left_after_a_worker_is_killed_mid_round() -> None:
    mods: dict[str, list] = {f"site-{i}": [Echo()] for i in range(3)}
    mods["site-2"] = [Slow()]
    grid = ParallelGrid(_sites(3), workers=1, mods=mods)
    folder = grid._pool.slots.folder
    try:
        grid.submit(_tasks(grid, 1, np.ones(N))[:2])  # answered, not read: files not yet seen
        end = time.monotonic() + 30
        while list(grid._pool.slots.flags[0][:2]) != [1, 1] and time.monotonic() < end:
            time.sleep(0.01)
        assert sorted(n[:3] for n in os.listdir(folder)) == ["w0-", "w0-"]  # params: taken
        assert len(list(grid.arrivals(limit=2))) == 2
        assert os.listdir(folder) == []  # read: the parent removed them, its maps stay
        assert list(grid.send_and_receive(_tasks(grid, 2, np.ones(N))[2:], timeout=0.3)) == []
        grid.submit(_tasks(grid, 3, np.zeros(N))[:1])  # site-2 still trains: never read
        assert [n[:1] for n in os.listdir(folder)] == ["p"]
        (worker,) = grid.processes
        os.kill(worker.pid, signal.SIGKILL)  # mid-round, with a file it never read
        (died,) = grid.arrivals(timeout=30)
        assert died.error is not None and died.error.kind == "worker-died"
    finally:
        grid.close()
    assert not folder.exists()


class Shift:
    """A site mod that adds its site's number and the round to its reply (picklable)."""

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        reply = next_handler(task)
        shift = np.float32(0.1 * int(task.site_id.split("-")[1]) + task.round / 3)
        return replace(reply, arrays=reply.arrays.map(lambda v: v + shift))


def test_an_echo_study_through_slots_is_the_sequential_model() -> None:
    study = StudyConfig.model_validate(
        {
            "name": "slots",
            "dataset": {"name": "synthetic", "options": {"num_sites": 6}},
            "model": {"kind": "echo", "parameters": 50_000},
            "strategy": {"name": "fedavgm", "options": {"momentum": 0.9}},
            "training": {"epochs": 1},
            "rounds": 2,
            "min_sites": 1,
            "seed": 0,
            "evaluate_every": 0,
            "baselines": {"local": False, "pooled": False, "cross_site": False},
        }
    )
    sites = _sites(6)
    mods = {s.site_id: [Shift()] for s in sites}
    one = train_on_grid(grid_for(sites, mods=mods), study, (2,), label="one")
    with ParallelGrid(sites, workers=2, mods=mods) as grid:
        two = train_on_grid(grid, study, (2,), label="two")
        assert grid._pool.slots.mapped > 0
    assert two.params == one.params


def test_a_killed_coordinators_folder_is_removed_by_the_next_one(tmp_path: Path) -> None:
    def folder() -> Path:
        path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=tmp_path))
        (path / "w0-s0-1").write_bytes(b"x" * 64)  # a slot file nobody unlinked
        os.utime(path, (time.time() - 120, time.time() - 120))  # changed 2 minutes ago
        return path

    killed, running, young = folder(), folder(), Path(tempfile.mkdtemp(prefix=PREFIX, dir=tmp_path))
    hold = (  # a coordinator's lock on its folder, as ReplySlots holds it
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", hold, str(p)], stdout=subprocess.PIPE, text=True)
        for p in (killed, running)
    ]
    try:
        assert [p.stdout.readline().strip() for p in procs if p.stdout] == ["locked"] * 2
        assert remove_orphans(tmp_path) == []  # both coordinators run; one folder is new
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        assert remove_orphans(tmp_path) == [killed]  # the kernel dropped its lock
        assert not killed.exists() and running.exists() and young.exists()
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
    slots = ReplySlots(mp.get_context("spawn"), 1)  # a live grid holds its folder's lock
    fd = os.open(slots.folder, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        slots.close()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # closed: the lock went with the folder
    finally:
        os.close(fd)
