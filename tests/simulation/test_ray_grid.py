"""The Ray grid (``--backend ray``) on one local Ray instance bound to 127.0.0.1: the sequential
model, error replies, no stale replies, quorum, asynchronous rounds, the CLI."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs the ray extra (fedcare[ray])")

from typer.testing import CliRunner  # noqa: E402

from fedcare.cli.main import app  # noqa: E402
from fedcare.data.registry import load_dataset  # noqa: E402
from fedcare.errors import ConfigError, TransportError  # noqa: E402
from fedcare.grid import Quorum  # noqa: E402
from fedcare.records import Reply, Task  # noqa: E402
from fedcare.records.study import StudyConfig  # noqa: E402
from fedcare.simulation.ray_connect import check_address, connect, import_ray  # noqa: E402
from fedcare.simulation.ray_grid import RayGrid  # noqa: E402
from fedcare.simulation.run import run_simulation, train_on_grid  # noqa: E402
from fedcare.simulation.stragglers import Slowdown  # noqa: E402
from fedcare.site.app import Handler  # noqa: E402

from ..conftest import require_mirror  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Raise:
    """A site mod that raises."""

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        raise RuntimeError(f"boom at {task.site_id}")


class Slow:
    """A site mod that answers ``task.config["sleep"]`` seconds late, without an error."""

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        time.sleep(float(task.config.get("sleep", 0.0)))
        return Reply(task.study_id, task.round, task.site_id, task.kind, num_samples=1)


class Log:
    """A site mod that sleeps ``task.config["sleep"]`` seconds, then notes the task in the file
    ``task.config["log"]`` (the actor's process writes it) and passes it on."""

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        time.sleep(float(task.config.get("sleep", 0.0)))
        with open(str(task.config["log"]), "a") as log:
            log.write(f"{task.site_id} {task.round}\n")
        return next_handler(task)


class Die:
    """A site mod that kills its actor's process."""

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        os._exit(3)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance for the module, started as a Ray grid starts it."""
    assert connect(ray, None, 8)  # logical CPUs: room for every grid of this module at once
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def sites() -> list:
    require_mirror()
    return list(load_dataset("heart-disease", protocol="raw").sites)


@pytest.fixture(scope="module")
def grid(local_ray: None, sites: list) -> Iterator[RayGrid]:
    # sorted sites, round-robin: cleveland, switzerland -> actor 0; hungary, va -> actor 1
    mods: dict[str, Any] = {"va": [Raise()], "hungary": [Slow()], "cleveland": [Slow()]}
    with RayGrid(sites, actors=2, record=True, mods=mods) as g:
        yield g


def _task(site: str, round: int = 1, sleep: float = 0.0) -> Task:
    config = {"sleep": sleep} if sleep else {}
    return Task(study_id="t/federated", round=round, site_id=site, kind="fit", config=config)


def _untimed(fit: dict) -> dict:
    """A round's fit record without its timing (seconds differ from run to run), with the
    outcome of each site's reply kept."""
    outcomes = {s: t["outcome"] for s, t in fit["site_timing"].items()}
    return {**{k: v for k, v in fit.items() if k != "site_timing"}, "outcomes": outcomes}


def _heart() -> StudyConfig:
    study = StudyConfig.from_yaml(EXAMPLES / "heart-disease.yaml")
    return study.with_overrides(rounds=3, baselines={"local": False, "pooled": False})


def test_the_local_instance_listens_on_loopback_without_a_dashboard(local_ray: None) -> None:
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
    assert not connect(ray, None, 8)  # joined already: reused, and not shut down by a grid


def test_cli_ray_backend_trains_the_sequential_model(local_ray: None, tmp_path: Path) -> None:
    require_mirror()
    args = ["simulate", str(EXAMPLES / "heart-disease.yaml"), "--out", str(tmp_path)]
    args += ["--rounds", "3", "--backend", "ray", "--workers", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results.json").read_text())
    sequential = run_simulation(
        StudyConfig.from_yaml(EXAMPLES / "heart-disease.yaml").with_overrides(rounds=3)
    )
    assert results["model_card"]["model"]["hash"] == sequential["model_card"]["model"]["hash"]
    assert [_untimed(r["fit"]) for r in results["history"]] == [
        _untimed(r["fit"]) for r in sequential["history"]
    ]
    assert ray.is_initialized()  # the grid joined this module's instance and left it running


def test_options_and_addresses_are_checked(local_ray: None, sites: list) -> None:
    bad = CliRunner().invoke(app, ["simulate", "--dataset", "heart-disease", "--address", "x:1"])
    assert bad.exit_code == 2 and "needs the ray backend" in bad.output
    bad = CliRunner().invoke(app, ["simulate", "--dataset", "heart-disease", "--backend", "gpu"])
    assert bad.exit_code == 2 and "unknown backend 'gpu'" in bad.output
    bad = CliRunner().invoke(
        app, ["simulate", "--dataset", "heart-disease", "--backend", "ray", "--address", ":1"]
    )
    assert bad.exit_code == 2 and "is not host:port" in bad.output
    with pytest.raises(ConfigError, match=r"cannot reach the Ray cluster at '127\.0\.0\.1:1'"):
        RayGrid(sites, address="127.0.0.1:1")
    with pytest.raises(ConfigError, match="is not host:port"):
        check_address("nowhere")
    with pytest.raises(ConfigError, match="num_gpus per Ray actor must be a number >= 0"):
        RayGrid(sites, num_gpus=-1)
    with pytest.raises(ConfigError, match="workers must be an integer >= 1"):
        RayGrid(sites, actors=0)


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'fedcare\[ray\]'"):
        import_ray()


def test_a_raising_site_gives_an_error_reply(grid: RayGrid) -> None:
    replies = {r.site_id: r for r in grid.send_and_receive([_task("va"), _task("switzerland")])}
    assert replies["va"].error is not None and replies["va"].error.kind == "exception"
    assert "boom at va" in replies["va"].error.message
    assert replies["switzerland"].error is not None  # a bare task: the site refuses, alive
    assert replies["switzerland"].error.kind != "worker-died"
    (unknown,) = grid.send_and_receive([_task("nowhere")])
    assert unknown.error is not None and unknown.error.kind == "unknown-site"


def test_a_late_reply_never_answers_a_later_call(grid: RayGrid) -> None:
    assert list(grid.send_and_receive([_task("hungary", 1, sleep=1.0)], timeout=0.2)) == []
    (reply,) = grid.send_and_receive([_task("hungary", 2)])  # round 1's reply is dropped
    assert reply.round == 2 and reply.site_id == "hungary"


def test_a_quorum_closes_the_call_after_its_grace(grid: RayGrid) -> None:
    # hungary and va share actor 1: va's task waits behind hungary's slow one
    tasks = [_task("cleveland", 3), _task("hungary", 3, sleep=2.0), _task("va", 3)]
    start = time.monotonic()
    got = list(grid.send_and_receive(tasks, quorum=Quorum(replies=1, grace_s=0.3)))
    took = time.monotonic() - start
    assert [(r.site_id, r.ok) for r in got] == [("cleveland", True)]
    assert 0.3 <= took < 1.8
    # an error reply does not count towards the quorum: the call waits for the others
    tasks = [_task("switzerland", 4), _task("hungary", 4, sleep=0.5)]
    got = list(grid.send_and_receive(tasks, quorum=Quorum(replies=1, grace_s=0.0)))
    assert sorted((r.site_id, r.ok) for r in got) == [("hungary", True), ("switzerland", False)]


def test_submit_and_arrivals_take_replies_as_they_come(grid: RayGrid) -> None:
    grid.submit([_task("cleveland", 5, sleep=0.5), _task("va", 5), _task("nowhere", 5)])
    with pytest.raises(ConfigError, match=r"sites \['cleveland'\] would have more"):
        grid.submit([_task("cleveland", 6)])
    assert [t.site_id for t in grid.open_tasks()] == ["cleveland", "va"]
    first = list(grid.arrivals(limit=2))
    assert [r.site_id for r in first] == ["nowhere", "va"]  # refused at once, then the fast one
    assert [t.site_id for t in grid.open_tasks()] == ["cleveland"]
    (last,) = grid.arrivals(timeout=10.0)
    assert (last.site_id, last.round) == ("cleveland", 5) and grid.open_tasks() == []
    grid.submit([_task("cleveland", 7, sleep=1.0)])
    assert [t.round for t in grid.cancel_open()] == [7]
    assert list(grid.arrivals(timeout=2.0)) == []  # the cancelled task's reply is never taken
    (reply,) = grid.send_and_receive([_task("cleveland", 8)])
    assert reply.round == 8


def test_an_actor_skips_closed_tasks_and_dies_with_error_replies(
    local_ray: None, sites: list, tmp_path: Path
) -> None:
    a, b, c = sorted(s.site_id for s in sites[:3])
    log = str(tmp_path / "tasks.log")
    mods: dict[str, Any] = {a: [Log()], b: [Log()], c: [Log(), Die()]}
    with RayGrid(sites[:3], actors=1, mods=mods) as g:
        late = [
            Task(study_id="t/federated", round=1, site_id=s, kind="fit", config=config)
            for s, config in [(a, {"sleep": 1.0, "log": log}), (b, {"log": log}), (c, {"log": log})]
        ]
        assert list(g.send_and_receive(late, timeout=0.3)) == []
        task = Task(study_id="t/federated", round=2, site_id=b, kind="fit", config={"log": log})
        (reply,) = g.send_and_receive([task])
        assert (reply.site_id, reply.round) == (b, 2)
        assert reply.error is not None and reply.error.kind != "worker-died"
        # b's and c's round-1 tasks waited at the actor behind a's and were skipped when the
        # call closed (c's would have killed the actor); a's had started, so it ran to its end
        assert Path(log).read_text().split("\n")[:-1] == [f"{a} 1", f"{b} 2"]
        task = Task(study_id="t/federated", round=3, site_id=c, kind="fit", config={"log": log})
        replies = {r.site_id: r for r in g.send_and_receive([task, _task(a, 3)])}
        for site in (a, c):
            error = replies[site].error
            assert error is not None and error.kind == "worker-died", site
            assert f"site {site!r}: Ray actor 0 died" in error.message
        (again,) = g.send_and_receive([_task(b, 4)])
        assert again.error is not None and again.error.kind == "worker-died"
    with pytest.raises(TransportError, match="closed"):
        g.send_and_receive([_task(a)])


def test_wire_rows_and_subset(grid: RayGrid, sites: list) -> None:
    assert grid.actors == 2 and grid.site_ids() == sorted(s.site_id for s in sites)
    assert grid.declared_rows("test") == {s.site_id: len(s.test) for s in sites}
    one = grid.subset(["hungary"])
    assert one.site_ids() == ["hungary"] and list(one.declared_rows()) == ["hungary"]
    with pytest.raises(TransportError, match="nowhere"):
        grid.subset(["nowhere"])
    (reply,) = one.send_and_receive([_task("va", 10)])
    assert reply.error is not None and reply.error.kind == "unknown-site"
    one.close()  # a subset leaves the actors to its grid
    before = len(grid.wire)
    (reply,) = grid.send_and_receive([_task("hungary", 11)])
    assert reply.ok and grid.wire[before:] == [_task("hungary", 11), reply]


def test_a_deadline_bound_round_leaves_the_straggler_out(local_ray: None, sites: list) -> None:
    study = _heart().with_overrides(rounds=2, min_sites=3, round_timeout=20.0, round_grace_s=0.3)
    mods: dict[str, Any] = {"cleveland": [Slowdown(1.0, extra_s=2.0)]}
    with RayGrid(sites, actors=4, mods=mods) as g:
        model = train_on_grid(g, study, (13,), label="federated")
    for record in model.history:
        fit = record.fit
        assert fit["num_contributions"] == 3
        assert fit["site_timing"]["cleveland"] == {"reply_s": None, "outcome": "late"}
        assert "round closed" in fit["failed_sites"]["cleveland"]
        assert sorted(fit["site_info"]) == ["hungary", "switzerland", "va"]
