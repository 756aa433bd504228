"""The asynchronous FedBuff driver over the in-memory grid (fedcare.strategy.async_loop): versions
step by hand-computable amounts, stale updates are capped, bad and unexpected replies never
enter a step, and open tasks are cancelled at the end."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from fedcare.errors import ConfigError, RoundFailedError
from fedcare.evaluation.report_timing import site_timing_table
from fedcare.grid import Grid
from fedcare.records import ArrayRecord, Reply, Task
from fedcare.strategy.async_loop import run_async
from fedcare.strategy.fedbuff import FedBuff
from fedcare.strategy.loop import RoundConfig, RoundRecord
from fedcare.transport.inmemory import InMemoryGrid

from .helpers import PARAMS, fixed_grid, fixed_site

UPDATES = {"a": ([1.0, 0.0], 10), "b": ([0.0, 1.0], 10), "c": ([2.0, 2.0], 10)}


def _cfg(rounds: int, evaluate_every: int = 0) -> RoundConfig:
    return RoundConfig(study_id="s", num_rounds=rounds, seed=3, evaluate_every=evaluate_every)


def test_versions_step_by_the_hand_computed_staleness_weighted_updates() -> None:
    grid = fixed_grid(UPDATES, record=True)
    strategy = FedBuff(buffer_size=2, concurrency=3, server_lr=1.0)
    seen: list[RoundRecord] = []
    state, records = run_async(
        grid,
        strategy,
        strategy.init_state(PARAMS),
        _cfg(2, evaluate_every=2),
        on_round=lambda r, s: seen.append(r),
    )
    # v0 sent to a, b, c; a (tau 0) arrives, a is sent v0 again; b (tau 0): step 1 ->
    # x1 = (ua + ub) / 2. b is sent v1; c (sent v0, tau 1) and a (sent v0, tau 1): step 2 ->
    # x2 = x1 + (s(1) uc + s(1) ua) / 2 with s(1) = 1/sqrt(2).
    s1 = 1 / math.sqrt(2)
    x1 = np.array([0.5, 0.5])
    x2 = x1 + 0.5 * s1 * (np.array([2.0, 2.0]) + np.array([1.0, 0.0]))
    np.testing.assert_allclose(state.params["w"], x2, rtol=1e-12)
    assert [r.round for r in records] == [1, 2] and seen == records
    first, second = records[0].fit, records[1].fit
    assert first["contributors"] == ["a", "b"] and first["staleness"] == [0, 0]
    assert second["contributors"] == ["c", "a"] and second["staleness"] == [1, 1]
    assert [c["weight"] for c in second["contributions"]] == [s1, s1]
    assert [c["sent_version"] for c in second["contributions"]] == [0, 0]
    assert set(second["site_timing"]) == {"c", "a"} and second["failed_sites"] == {}
    # as the round loop records it, so the report's timing table and the dashboard show steps
    assert {e["outcome"] for e in second["site_timing"].values()} == {"taken"}
    assert all(e["reply_s"] >= 0 for e in second["site_timing"].values())
    table = site_timing_table([r.to_dict() for r in records])
    assert table is not None and table["sites"] == ["a", "b", "c"] and table["late"] == 0
    assert records[0].evaluate is None and records[1].evaluate is not None
    assert set(records[1].evaluate["per_site"]) == {"a", "b", "c"}
    # the tasks left open (b sent v1, c sent v1) were cancelled: none is open, none answered
    assert grid.open_tasks() == []
    fits = [m for m in grid.wire if isinstance(m, Task) and m.kind == "fit"]
    assert [(t.site_id, t.round) for t in fits] == [
        ("a", 0),
        ("b", 0),
        ("c", 0),
        ("a", 0),
        ("b", 1),
        ("c", 1),
    ]
    assert len({t.config["seed"] for t in fits}) == len(fits)  # one seed per task
    answered = [(m.site_id, m.round) for m in grid.wire if isinstance(m, Reply) and m.kind == "fit"]
    assert answered == [("a", 0), ("b", 0), ("c", 0), ("a", 0)]  # none to the cancelled ones


def test_a_staleness_cap_drops_and_records_stale_updates() -> None:
    strategy = FedBuff(buffer_size=2, concurrency=3, server_lr=1.0, max_staleness=0)
    state, records = run_async(fixed_grid(UPDATES), strategy, strategy.init_state(PARAMS), _cfg(2))
    # step 1 as above; c and a (sent v0) arrive with staleness 1 > 0: dropped. b and c, sent
    # v1, arrive fresh: x2 = x1 + (ub + uc) / 2
    np.testing.assert_allclose(state.params["w"], [1.5, 2.0], rtol=1e-12)
    assert records[1].fit["dropped_stale"] == {"c": 1, "a": 1}
    assert records[1].fit["contributors"] == ["b", "c"]


def test_the_in_memory_run_is_deterministic() -> None:
    strategy = FedBuff(buffer_size=2, concurrency=2, server_lr=0.7)
    one, _ = run_async(fixed_grid(UPDATES), strategy, strategy.init_state(PARAMS), _cfg(5))
    two, _ = run_async(fixed_grid(UPDATES), strategy, strategy.init_state(PARAMS), _cfg(5))
    assert one.params == two.params


def test_failed_and_malformed_replies_never_enter_a_step() -> None:
    def broken(task: Task) -> Reply:
        raise RuntimeError("disk on fire")

    grid = InMemoryGrid(
        {
            "a": fixed_site({"w": np.array([1.0, 1.0])}, 5),
            "b": broken,
            "c": fixed_site({"w": np.array([np.nan, 1.0])}, 5),
            "d": fixed_site({"w": np.array([4.0, 4.0])}, 500),
        },
        declared_rows={"train": {"a": 5, "b": 5, "c": 5, "d": 5}},
    )
    strategy = FedBuff(buffer_size=2, concurrency=4)
    state, records = run_async(grid, strategy, strategy.init_state(PARAMS), _cfg(1))
    np.testing.assert_allclose(state.params["w"], [1.0, 1.0])  # a twice, nothing else
    failed = records[0].fit["failed_sites"]
    assert "disk on fire" in failed["b"]
    assert "NaN or infinite values" in failed["c"]
    assert "num_samples 500, more than the 5 training rows" in failed["d"]
    assert records[0].fit["contributors"] == ["a", "a"]


class _Forging(Grid):
    """An in-memory grid that, before its first real arrival, yields a forged reply for version
    7 (no task of that version was ever sent, as a cancelled task's reply would look)."""

    def __init__(self, inner: InMemoryGrid) -> None:
        self.inner = inner
        self.forged = False

    def site_ids(self) -> list[str]:
        return self.inner.site_ids()

    def send_and_receive(self, tasks, *, timeout=None, quorum=None):  # type: ignore[no-untyped-def]
        return self.inner.send_and_receive(tasks, timeout=timeout, quorum=quorum)

    def submit(self, tasks: list[Task]) -> None:  # type: ignore[override]
        self.inner.submit(tasks)

    def arrivals(self, *, limit=None, timeout=None) -> Iterator[Reply]:  # type: ignore[no-untyped-def]
        if not self.forged:
            self.forged = True
            forged = ArrayRecord({"w": np.array([1e6, 1e6])})
            yield Reply("s", 7, "a", "fit", arrays=forged, num_samples=1)
        yield from self.inner.arrivals(limit=limit, timeout=timeout)

    def cancel_open(self) -> list[Task]:
        return self.inner.cancel_open()


def test_a_reply_to_no_open_task_never_enters_a_step() -> None:
    strategy = FedBuff(buffer_size=2, concurrency=2)
    grid = _Forging(fixed_grid(UPDATES))
    state, records = run_async(grid, strategy, strategy.init_state(PARAMS), _cfg(1))
    np.testing.assert_allclose(state.params["w"], [0.5, 0.5])  # (ua + ub) / 2
    assert "answers no open task" in records[0].fit["failed_sites"]["a (unexpected)"]
    assert grid.inner.open_tasks() == []


def test_no_site_left_fails_and_grids_without_async_refuse() -> None:
    def refuses(task: Task) -> Reply:
        return Reply.failure(task, "refused", "plan not approved")

    strategy = FedBuff(buffer_size=2, concurrency=2)
    grid = InMemoryGrid({"a": refuses, "b": refuses})
    with pytest.raises(RoundFailedError, match="no site can be sent a task") as info:
        run_async(grid, strategy, strategy.init_state(PARAMS), _cfg(1))
    assert "refused: plan not approved" in str(info.value)
    assert grid.open_tasks() == []

    class Sync(Grid):
        def site_ids(self) -> list[str]:
            return ["a"]

        def send_and_receive(self, tasks, *, timeout=None, quorum=None):  # type: ignore[no-untyped-def]
            return iter(())

    with pytest.raises(ConfigError, match="Sync cannot run asynchronous rounds"):
        run_async(Sync(), strategy, strategy.init_state(PARAMS), _cfg(1))


def test_in_memory_grid_runs_submitted_tasks_in_order_and_cancels() -> None:
    grid = fixed_grid(UPDATES)
    tasks = [Task("s", v, s, "fit") for v, s in ((0, "b"), (1, "a"), (0, "c"))]
    grid.submit(tasks)
    with pytest.raises(ConfigError, match="site 'a' already has an open submitted task"):
        grid.submit([Task("s", 2, "a", "fit")])
    got = list(grid.arrivals(limit=2))
    assert [(r.site_id, r.round) for r in got] == [("b", 0), ("a", 1)]
    assert [t.site_id for t in grid.open_tasks()] == ["c"]
    assert [t.site_id for t in grid.cancel_open()] == ["c"]
    assert list(grid.arrivals()) == [] and grid.open_tasks() == []


class _Restarted(InMemoryGrid):
    """An in-memory grid that kept replies an earlier run took into no step."""

    def __init__(self, kept: list[Reply]) -> None:
        sites = {s: fixed_site({"w": np.array(u)}, n) for s, (u, n) in UPDATES.items()}
        super().__init__(sites, record=True)
        self.kept = kept

    def unstepped(self) -> list[Reply]:
        return list(self.kept)


def test_updates_kept_across_a_restart_are_buffered_first_and_their_sites_not_asked_again() -> None:
    def update(site: str, version: int, w: list[float]) -> Reply:
        arrays = ArrayRecord({"w": np.array(w)})
        return Reply("s", version, site, "fit", arrays, num_samples=10, submission=version + 1)

    kept = [update("c", 0, [9.0, 9.0]), update("a", 2, [2.0, 0.0]), update("b", 3, [0.0, 4.0])]
    grid = _Restarted(kept)
    strategy = FedBuff(buffer_size=2, concurrency=3, server_lr=1.0, max_staleness=1)
    state, [record] = run_async(
        grid, strategy, strategy.init_state(PARAMS), _cfg(4), start_round=4
    )  # from version 3: c's update (tau 3) is dropped; a's (tau 1) and b's (tau 0) step at once
    np.testing.assert_allclose(state.params["w"], 0.5 * np.array([2 / math.sqrt(2), 4.0]))
    fit = record.fit
    assert fit["contributors"] == ["a", "b"] and fit["staleness"] == [1, 0]
    assert fit["dropped_stale"] == {"c": 3}
    assert [(c["task"], c["restored"]) for c in fit["contributions"]] == [
        ("s/2/fit/a#3", True),
        ("s/3/fit/b#4", True),
    ]
    assert not [m for m in grid.wire if isinstance(m, Task)]  # nobody was asked again


def test_more_kept_updates_than_a_buffer_step_k_at_a_time() -> None:
    kept = [
        Reply("s", 0, site, "fit", ArrayRecord({"w": np.array(u)}), num_samples=10)
        for site, (u, _) in UPDATES.items()
    ]
    grid = _Restarted(kept)
    strategy = FedBuff(buffer_size=2, concurrency=3, server_lr=1.0)
    _, records = run_async(grid, strategy, strategy.init_state(PARAMS), _cfg(2))
    assert [r.fit["contributors"] for r in records[:1]] == [["a", "b"]]
    second = records[1].fit
    assert second["contributors"][0] == "c" and second["staleness"][0] == 1  # screened at v1
    assert [c["restored"] for c in second["contributions"]] == [True, False]
