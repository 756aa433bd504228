"""The parallel grid (``--workers N``): the sequential model, error replies, no orphan workers."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedcare.data.registry import load_dataset
from fedcare.data.synthetic import load_synthetic
from fedcare.errors import ConfigError, TransportError
from fedcare.records import Reply, Task
from fedcare.records.arrays import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.simulation.attacks import malicious_mods
from fedcare.simulation.parallel import ParallelGrid, _Pool, check_workers
from fedcare.simulation.run import grid_for, run_simulation, train_on_grid
from fedcare.site.app import Handler

from ..conftest import require_mirror

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Raise:
    """A site mod that raises (picklable: a worker process is sent it)."""

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        raise RuntimeError(f"boom at {task.site_id}")


class Die:
    """A site mod that kills its worker process."""

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        os._exit(3)


@pytest.fixture(scope="module")
def heart() -> StudyConfig:
    require_mirror()
    study = StudyConfig.from_yaml(EXAMPLES / "heart-disease.yaml")
    return study.with_overrides(rounds=3, baselines={"local": False, "pooled": False})


@pytest.fixture(scope="module")
def sites() -> list:
    require_mirror()
    return list(load_dataset("heart-disease", protocol="raw").sites)


def _task(site: str, round: int = 1) -> Task:
    return Task(study_id="t/federated", round=round, site_id=site, kind="fit")


def _untimed(fit: dict) -> dict:
    """A round's fit record without its timing (seconds differ from run to run), with the
    outcome of each site's reply kept."""
    outcomes = {s: t["outcome"] for s, t in fit["site_timing"].items()}
    return {**{k: v for k, v in fit.items() if k != "site_timing"}, "outcomes": outcomes}


def _alive(reply: Reply) -> bool:
    """The reply came from a running worker (a bare task may fail in the site, not die)."""
    return reply.error is None or reply.error.kind != "worker-died"


@pytest.mark.parametrize("strategy", ["fedavg", "scaffold"])
def test_two_workers_train_the_sequential_model(heart: StudyConfig, strategy: str) -> None:
    study = heart.with_overrides(strategy={"name": strategy, "options": {}})
    one = run_simulation(study, workers=1)
    two = run_simulation(study, workers=2)
    assert two["model_card"]["model"]["hash"] == one["model_card"]["model"]["hash"]
    assert two.model.params == one.model.params
    assert two["final"]["per_site"] == one["final"]["per_site"]
    assert [_untimed(r["fit"]) for r in two["history"]] == [
        _untimed(r["fit"]) for r in one["history"]
    ]
    assert mp.active_children() == []  # the workers stopped with the simulation


def test_wire_rows_and_subset_behave_as_the_in_memory_grid(heart: StudyConfig, sites: list) -> None:
    sequential = grid_for(sites, record=True)
    with ParallelGrid(sites, workers=3, record=True) as grid:
        assert grid.workers == 3 and grid.site_ids() == sequential.site_ids()
        for split in ("train", "test"):
            assert grid.declared_rows(split) == sequential.declared_rows(split)
        a = train_on_grid(sequential, heart, (13,), label="wire")
        b = train_on_grid(grid, heart, (13,), label="wire")
        assert a.params == b.params
        kinds = [(type(m).__name__, m.site_id, m.round, m.kind) for m in sequential.wire]
        assert sorted(kinds) == sorted(
            (type(m).__name__, m.site_id, m.round, m.kind) for m in grid.wire
        )
        one = grid.subset(["va"])
        assert one.site_ids() == ["va"] and one.declared_rows() == {"va": len(sites[-1].train)}
        with pytest.raises(TransportError, match="nowhere"):
            grid.subset(["nowhere"])
        (reply,) = one.send_and_receive([_task("cleveland")])
        assert reply.error is not None and reply.error.kind == "unknown-site"
        one.close()  # a subset leaves the workers to its grid
        (reply,) = grid.send_and_receive([_task("cleveland")])
        assert reply.site_id == "cleveland"


def test_a_raising_site_and_a_dead_worker_give_error_replies(sites: list) -> None:
    # sorted sites, round-robin: cleveland, switzerland -> worker 0; hungary, va -> worker 1
    mods = {"va": [Raise()], "hungary": [Die()]}
    with ParallelGrid(sites, workers=2, mods=mods) as grid:
        replies = {r.site_id: r for r in grid.send_and_receive([_task("va"), _task("cleveland")])}
        assert replies["va"].error is not None
        assert "boom at va" in replies["va"].error.message
        assert (
            replies["cleveland"].error is None or replies["cleveland"].error.kind != "worker-died"
        )
        (dead,) = grid.send_and_receive([_task("hungary", 2)])
        assert dead.error is not None and dead.error.kind == "worker-died"
        assert "'hungary'" in dead.error.message and "exit code 3" in dead.error.message
        replies = {
            r.site_id: r for r in grid.send_and_receive([_task("va", 3), _task("switzerland", 3)])
        }
        assert replies["va"].error is not None and replies["va"].error.kind == "worker-died"
        assert (
            replies["switzerland"].error is None
            or replies["switzerland"].error.kind != "worker-died"
        )
        procs = grid.processes
    assert all(not p.is_alive() for p in procs) and mp.active_children() == []
    with pytest.raises(TransportError, match="closed"):
        list(grid.send_and_receive([_task("va")]))


def test_unpicklable_mods_and_bad_worker_counts_are_refused(sites: list) -> None:
    mods = malicious_mods(["va"], "scale", strength=5.0)  # closures: no worker can be sent them
    with pytest.raises(ConfigError, match=r"mods for sites \['va'\]"):
        ParallelGrid(sites, workers=2, mods=mods)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="workers must be an integer >= 1"):
            check_workers(bad)
    assert mp.active_children() == []


def test_a_torch_cnn_trains_the_same_in_workers() -> None:
    torch = pytest.importorskip("torch")
    require_mirror()
    study = StudyConfig.from_yaml(EXAMPLES / "pneumoniamnist.yaml").with_overrides(
        rounds=2, training={"epochs": 1, "max_steps": 2, "lr": 0.001, "batch_size": 16}
    )
    ds = load_dataset("pneumoniamnist", **study.dataset.options)
    shape = ds.sites[0].train.input_shape
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the result depends on it: the workers must use this one too
    try:
        sequential = train_on_grid(grid_for(list(ds.sites)), study, shape, label="cnn")
        with ParallelGrid(list(ds.sites), workers=2) as grid:
            parallel = train_on_grid(grid, study, shape, label="cnn")
    finally:
        torch.set_num_threads(threads)
    assert parallel.params == sequential.params
    assert [_untimed(r.fit) for r in parallel.history] == [
        _untimed(r.fit) for r in sequential.history
    ]


class Sleep:
    """A site mod that answers late."""

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        time.sleep(1.5)
        return next_handler(task)


def test_a_late_reply_never_answers_a_later_call(sites: list) -> None:
    with ParallelGrid(sites, workers=2, mods={"va": [Sleep()]}) as grid:
        assert list(grid.send_and_receive([_task("va", 1)], timeout=0.2)) == []
        (reply,) = grid.send_and_receive([_task("va", 2)])  # round 1's reply is dropped
        assert reply.round == 2


def test_personal_models_stay_in_their_workers() -> None:
    require_mirror()
    study = StudyConfig.from_yaml(EXAMPLES / "heart-disease-flamby-ditto.yaml")
    study = study.with_overrides(rounds=2, baselines={"local": False, "pooled": False})
    one = run_simulation(study, workers=1)["personalization"]
    two = run_simulation(study, workers=3)["personalization"]
    assert two["sites"] and two == one


class EchoParams:
    """A site mod that replies with the params its task carried (picklable)."""

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        arrays = ArrayRecord({"weight": task.params["weight"] + 0.0})
        return Reply(task.study_id, task.round, task.site_id, task.kind, arrays, num_samples=1)


class _Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[int, Task, bool]] = []

    def put(self, item: tuple[int, Task, bool]) -> None:
        self.items.append(item)


def test_a_worker_is_sent_a_calls_params_once_not_once_per_site() -> None:
    pool = object.__new__(_Pool)
    pool.owner = {f"s{i}": i % 2 for i in range(6)}
    pool.inboxes, pool.sent = [_Inbox(), _Inbox()], [None, None]
    shared = ArrayRecord({"weight": np.ones(1000)})
    for i in range(6):
        pool.send(1, replace(_task(f"s{i}"), params=shared))
    own = ArrayRecord({"weight": np.zeros(1000)})  # a site's own params (e.g. personal)
    pool.send(2, replace(_task("s0", 2), params=shared))
    pool.send(2, replace(_task("s2", 2), params=own))
    pool.send(2, replace(_task("s4", 2), params=shared))
    first = pool.inboxes[0].items
    assert [(c, t.site_id, sent) for c, t, sent in first] == [
        (1, "s0", True),
        (1, "s2", False),
        (1, "s4", False),
        (2, "s0", False),
        (2, "s2", True),
        (2, "s4", True),
    ]
    carried = [t.params for _, t, sent in first if sent]
    assert carried[0] is shared and carried[1] is own and carried[2] is shared
    assert all(len(t.params) == 0 for _, t, sent in first if not sent)  # nothing copied
    assert sum(sent for _, _, sent in pool.inboxes[1].items) == 1


def test_every_site_of_a_worker_gets_its_calls_params() -> None:
    sites = list(load_synthetic(num_sites=5, n_features=2, rows_per_site=4).sites)
    mods = {s.site_id: [EchoParams()] for s in sites}
    first = ArrayRecord({"weight": np.arange(1000.0)})
    second = ArrayRecord({"weight": -np.arange(1000.0)})
    with ParallelGrid(sites, workers=2, mods=mods) as grid:
        for rnd, params in ((1, first), (2, second), (3, second)):
            tasks = [replace(_task(s, rnd), params=params) for s in grid.site_ids()]
            replies = list(grid.send_and_receive(tasks))
            assert sorted(r.site_id for r in replies) == grid.site_ids()
            for reply in replies:
                assert reply.error is None, reply.error
                np.testing.assert_array_equal(reply.arrays["weight"], params["weight"])


class Stall:
    """A site mod whose tasks never finish in time (picklable)."""

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        time.sleep(60)
        return next_handler(task)


def test_closing_never_hangs_on_a_stalled_worker_with_a_full_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Calls that close while their site's worker is stuck leave tasks (with 1 MB of params
    each, more than the pipe holds) queued for it: closing stops the worker and returns."""
    import fedcare.simulation.parallel as parallel

    monkeypatch.setattr(parallel, "JOIN_S", 0.5)
    (site,) = load_synthetic(num_sites=1, seed=0).sites
    grid = ParallelGrid([site], workers=1, mods={site.site_id: [Stall()]})
    big = ArrayRecord({"w": np.zeros(250_000, np.float32)})
    for r in range(1, 6):  # each with new params: all of them travel
        task = replace(_task(site.site_id, r), params=ArrayRecord({"w": big["w"] + r}))
        assert list(grid.send_and_receive([task], timeout=0.05)) == []
    start = time.monotonic()
    grid.close()
    assert time.monotonic() - start < 10
    assert not any(p.is_alive() for p in grid.processes)
