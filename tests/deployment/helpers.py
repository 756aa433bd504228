"""Helpers for the deployment tests: kits, a real coordinator with real site agents, waiting.

Everything here runs for real on 127.0.0.1 over mutual TLS: :func:`deployment` starts an
in-process :class:`Coordinator` (ephemeral port) and one :class:`SiteAgent` thread per site
(their tasks run in spawned worker processes); :class:`Processes` runs ``python -m fedcare``
commands as child processes (:mod:`.processes`); both always stop what they started, also
when a test fails. :mod:`.wire` plays a site by hand.
Waiting helpers fail with the study's progress and the logs of every agent and process, so a
failure on a loaded machine says where it stuck.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from fedcare.coordinator.db import metadata
from fedcare.coordinator.rows import StudyInfo
from fedcare.coordinator.server import Coordinator
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.waiting import Backoff
from fedcare.records.arrays import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import TrainedModel
from fedcare.site.agent import SiteAgent
from fedcare.site.app import Handler, Mod
from fedcare.site.config import DatasetEntry, SiteDataConfig
from fedcare.site.mods import chain
from fedcare.transport.codec import decode_arrays
from fedcare.transport.provisioning import create_federation

HOSPITALS = ("cleveland", "hungary", "switzerland", "va")
#: Generous: the machine has 2 cores and may be shared with a CPU-heavy job.
STUDY_TIMEOUT_S = 150.0
#: Tests back off for fractions of the coordinator's defaults (5 s retries, 30 s withdrawals).
TEST_RETRY_BACKOFF = Backoff(0.1, 0.5)
TEST_WITHDRAWAL_BACKOFF = Backoff(1.0, 4.0)
Describe = Callable[[], str]


# Kits and studies ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Kits:
    """A provisioned federation: the operator's folder and every startup kit in it."""

    root: Path
    coordinator: Path
    sites: Mapping[str, Path]

    @property
    def ca_pem(self) -> bytes:
        return (self.coordinator / "ca.pem").read_bytes()


def provision(root: Path, sites: Sequence[str] = HOSPITALS, *, name: str = "fedcare-test") -> Kits:
    """A fresh federation under ``root`` with one kit per site."""
    fed = create_federation(root, name=name, sites=sites, coordinator_hosts=("127.0.0.1",))
    return Kits(root, fed.coordinator_kit, dict(fed.site_kits))


def heart_data(hospital: str) -> SiteDataConfig:
    """The data file of one heart-disease hospital (the built-in dataset, raw protocol)."""
    entry = DatasetEntry(builtin="heart-disease", site=hospital, options={"protocol": "raw"})
    return SiteDataConfig(datasets={"heart-disease": entry})


def write_heart_data(hospital: str, folder: Path) -> Path:
    """:func:`heart_data` as the YAML file ``fedcare site start --data`` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hospital}-data.yaml"
    path.write_text(yaml.safe_dump(heart_data(hospital).model_dump(mode="json")))
    return path


def heart_study(**overrides: Any) -> StudyConfig:
    """A short heart-disease study like ``examples/heart-disease.yaml``, with overrides.

    Standardization with global statistics makes round 0 a federated statistics round, so
    every deployment run also exercises the ``stats`` task kind.
    """
    base: dict[str, Any] = {
        "name": "heart-disease-deployment-test",
        "dataset": {"name": "heart-disease", "options": {"protocol": "raw"}},
        "model": {"kind": "logistic"},
        "preprocessing": {"impute": "mean", "scale": "global"},
        "strategy": {"name": "fedavg"},
        "training": {"epochs": 1, "lr": 0.05, "batch_size": 16, "optimizer": "sgd", "l2": 0.01},
        "rounds": 3,
        "min_sites": 4,
        "seed": 11,
        "baselines": {"local": False, "pooled": False, "cross_site": False},
    }
    return StudyConfig.from_dict({**base, **overrides}, source="test study")


def submit(store: CoordinatorStore, study: StudyConfig) -> str:
    """Queue ``study`` on the coordinator behind ``store`` (as ``fedcare study submit`` does)."""
    return store.create_study(study.name, study.model_dump(mode="json"), study.seed)


def simulate(study: StudyConfig) -> TrainedModel:
    """The same study in simulation: the same site code behind the in-memory grid."""
    from fedcare.data.registry import load_dataset
    from fedcare.simulation.run import grid_for, train_on_grid

    ds = load_dataset(study.dataset.name, **study.dataset.options)
    shape = ds.sites[0].train.input_shape
    return train_on_grid(grid_for(list(ds.sites)), study, shape, label="federated")


# Results ------------------------------------------------------------------------------------
def round_params(store: CoordinatorStore, study_id: str, round: int) -> ArrayRecord:
    """The global parameters checkpointed after ``round`` (0: the initial ones)."""
    info = store.get_round(study_id, round)
    return decode_arrays(store.artifacts.get(info.params_digest))


def final_params(store: CoordinatorStore, study_id: str) -> ArrayRecord:
    """The parameters of the study's last completed round."""
    checkpoint = store.last_completed_round(study_id)
    assert checkpoint is not None, f"study {study_id} has no completed round"
    return decode_arrays(checkpoint.params)


def max_abs_diff(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute difference per array (same names and shapes required)."""
    assert sorted(a) == sorted(b), f"arrays differ in names: {sorted(a)} vs {sorted(b)}"
    out = {}
    for name in a:
        assert a[name].shape == b[name].shape, (
            f"array {name!r} has shape {a[name].shape} vs {b[name].shape}"
        )
        diff = np.abs(np.asarray(a[name], np.float64) - np.asarray(b[name], np.float64))
        out[name] = float(diff.max()) if diff.size else 0.0
    return out


def assert_params_close(
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    *,
    atol: float = 1e-6,
    what: str = "params",
) -> None:
    diffs = max_abs_diff(actual, expected)
    worst = max(diffs.values(), default=0.0)
    assert worst <= atol, f"{what} differ by up to {worst:.3g} (> {atol:g}); per array: {diffs}"


def assert_same_evaluations(
    store: CoordinatorStore, study_id: str, model: TrainedModel, *, atol: float = 1e-6
) -> None:
    """Every round's per-site test loss equals the simulation's (the whole trajectory)."""
    deployed = {r.round: r.record for r in store.list_rounds(study_id) if r.round > 0}
    assert sorted(deployed) == [r.round for r in model.history], (
        f"rounds recorded {sorted(deployed)}, simulated {[r.round for r in model.history]}"
    )
    for rec in model.history:
        sim = (rec.evaluate or {}).get("per_site", {})
        dep = (deployed[rec.round].get("evaluate") or {}).get("per_site", {})
        assert sorted(dep) == sorted(sim), (
            f"round {rec.round}: evaluated on {sorted(dep)}, simulation on {sorted(sim)}"
        )
        for site, metrics in sim.items():
            gap = abs(dep[site]["loss"] - metrics["loss"])
            assert gap <= atol, (
                f"round {rec.round} site {site}: test loss {dep[site]['loss']!r} deployed vs "
                f"{metrics['loss']!r} simulated"
            )


def assert_same_validation(
    store: CoordinatorStore, study_id: str, model: TrainedModel, study: StudyConfig
) -> None:
    """The final model's clinical validation summaries (sent over the wire by each site) hold
    the counts of the simulation's (its report's evaluation of the trained model), and the
    study's report combines them."""
    from fedcare.coordinator.results import study_report
    from fedcare.data.registry import load_dataset
    from fedcare.simulation.run import evaluate_model, grid_for

    last = model.history[-1]
    ds = load_dataset(study.dataset.name, **study.dataset.options)
    sim: dict[str, dict[str, Any]] = {}
    evaluate_model(grid_for(list(ds.sites), feature_names=ds.feature_names), study, model, sim)
    dep = (store.get_round(study_id, last.round).record.get("evaluate") or {}).get("validation")
    assert dep is not None and sorted(dep) == sorted(sim) == sorted(HOSPITALS), (sim, dep)
    for site, summary in sim.items():
        for key in ("n", "prevalence", "no_information_rate", "confusion"):
            assert dep[site].get(key) == summary.get(key), (site, key, dep[site], summary)
    results, _ = study_report(store, study_id, html=False)
    overall = results["validation"]["federated"]["overall"]
    assert overall["n"] == sum(s["n"] for s in sim.values())


def contributors(record: Mapping[str, Any]) -> list[str]:
    """Sites whose fit reply was aggregated in a round (sampled and not failed)."""
    fit = record["fit"]
    return sorted(set(fit["sampled_sites"]) - set(fit.get("failed_sites", {})))


# Database snapshots -------------------------------------------------------------------------
_VOLATILE = {("sites", "first_seen"), ("sites", "last_seen"), ("coordinators", "seen_at")}


def db_state(store: CoordinatorStore) -> dict[str, list[str]]:
    """Every row of every table (without the sites' and coordinator's last-seen times), sorted,
    as text."""
    out = {}
    with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            cols = [c for c in table.columns if (table.name, c.name) not in _VOLATILE]
            out[table.name] = sorted(repr(tuple(r)) for r in conn.execute(select(*cols)))
    return out


def assert_db_unchanged(
    before: Mapping[str, list[str]], after: Mapping[str, list[str]], what: str
) -> None:
    changed = {
        table: {
            "removed": sorted(set(rows) - set(after[table])),
            "added": sorted(set(after[table]) - set(rows)),
        }
        for table, rows in before.items()
        if after[table] != rows
    }
    assert not changed, f"{what} changed the database: {changed}"


# Waiting --------------------------------------------------------------------------------------
def progress(store: CoordinatorStore, study_id: str) -> str:
    """A few lines on where a study stands: status, rounds, the latest rounds' tasks."""
    try:
        info = store.get_study(study_id)
        tasks = store.list_tasks(study_id)
    except Exception as err:  # the failure message must not hide the original problem
        return f"(cannot read study {study_id}: {err!r})"
    lines = [
        f"study {study_id}: status={info.status} reason={info.reason!r} "
        f"last_completed_round={info.last_completed_round}"
    ]
    latest = sorted({(t.round, t.attempt) for t in tasks})[-3:]
    for rnd, attempt in latest:
        row = [
            f"{t.kind}:{t.site_id}={t.status}"
            for t in tasks
            if (t.round, t.attempt) == (rnd, attempt)
        ]
        lines.append(f"  round {rnd} attempt {attempt}: {' '.join(row)}")
    return "\n".join(lines)


def _wait(
    store: CoordinatorStore,
    study_id: str,
    done: Callable[[StudyInfo], bool],
    goal: str,
    timeout: float,
    describe: Describe,
    check: Callable[[], None] | None,
) -> StudyInfo:
    end = time.monotonic() + timeout
    while True:
        info = store.get_study(study_id)
        if done(info):
            return info
        if info.status not in ("pending", "running"):
            pytest.fail(
                f"study ended {info.status!r} before {goal}\n"
                f"{progress(store, study_id)}\n{describe()}"
            )
        if check is not None:
            check()
        if time.monotonic() > end:
            pytest.fail(
                f"no {goal} within {timeout:g} s\n{progress(store, study_id)}\n{describe()}"
            )
        time.sleep(0.1)


def wait_for_status(
    store: CoordinatorStore,
    study_id: str,
    status: str = "completed",
    *,
    timeout: float = STUDY_TIMEOUT_S,
    describe: Describe = lambda: "",
    check: Callable[[], None] | None = None,
) -> StudyInfo:
    """Wait until the study is ``status``; fail with its progress and ``describe()`` if not."""
    return _wait(
        store,
        study_id,
        lambda i: i.status == status,
        f"status {status!r}",
        timeout,
        describe,
        check,
    )


def wait_for_round(
    store: CoordinatorStore,
    study_id: str,
    round: int,
    *,
    timeout: float = STUDY_TIMEOUT_S,
    describe: Describe = lambda: "",
    check: Callable[[], None] | None = None,
) -> StudyInfo:
    """Wait until round ``round`` is recorded (the study still running)."""
    return _wait(
        store,
        study_id,
        lambda i: i.last_completed_round is not None and i.last_completed_round >= round,
        f"completed round {round}",
        timeout,
        describe,
        check,
    )


# Site agents in threads ------------------------------------------------------------------------
class TamperedAgent(SiteAgent):
    """A real agent whose replies pass through ``mods`` after its worker and governance: a
    compromised site that sends what an honest agent never would (e.g. the attacks of
    :mod:`fedcare.simulation.attacks`), over the same mutual-TLS channel."""

    def __init__(self, *args: Any, mods: Sequence[Mod], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tamper = tuple(mods)

    def _handler(self, row_counts: dict[str, int]) -> Handler:
        return chain(self.tamper, super()._handler(row_counts))


class AgentThreads:
    """Real :class:`SiteAgent` s, one thread each, sharing one stop event."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.agents: dict[str, SiteAgent] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.errors: dict[str, BaseException] = {}
        self.events: dict[str, deque[str]] = {}

    def start(
        self,
        kit: Path,
        data: SiteDataConfig,
        *,
        address: str,
        state_dir: Path,
        poll_wait: float = 1.0,
        time_limit: float = 120.0,
        mods: Sequence[Mod] = (),
        tamper: Callable[[SiteAgent], None] | None = None,
    ) -> SiteAgent:
        """Start an agent; with ``mods``, a :class:`TamperedAgent`; ``tamper`` may change it
        before it starts (a test playing a malicious site)."""
        events: deque[str] = deque(maxlen=60)
        extra: dict[str, Any] = {"mods": mods} if mods else {}
        agent = (TamperedAgent if mods else SiteAgent)(
            kit,
            data,
            state_dir=state_dir,
            coordinator=address,
            poll_wait=poll_wait,
            time_limit=time_limit,
            on_event=lambda msg: events.append(f"{time.strftime('%H:%M:%S')} {msg}"),
            **extra,
        )
        site = agent.site_id
        if tamper is not None:
            tamper(agent)

        def main() -> None:
            try:
                agent.run(self.stop)
            except BaseException as err:  # reported by describe(); the test decides
                self.errors[site] = err

        thread = threading.Thread(target=main, name=f"agent-{site}", daemon=True)
        self.agents[site], self.threads[site], self.events[site] = agent, thread, events
        thread.start()
        return agent

    def close(self, timeout: float = 20.0) -> list[str]:
        """Stop every agent; return the sites whose thread did not end (their worker killed)."""
        self.stop.set()
        end = time.monotonic() + timeout
        for thread in self.threads.values():
            thread.join(max(0.1, end - time.monotonic()))
        stuck = [s for s, t in self.threads.items() if t.is_alive()]
        for site in stuck:
            self.agents[site].worker.stop()
        return stuck

    def describe(self) -> str:
        lines = []
        for site, events in self.events.items():
            error = self.errors.get(site)
            lines.append(f"agent {site}: {'ERROR ' + repr(error) if error else 'ok'}")
            lines.extend(f"    {e}" for e in list(events)[-12:])
        return "\n".join(lines)


# The in-process deployment -------------------------------------------------------------------
@dataclass
class Deployment:
    """A running coordinator and its site agents."""

    coordinator: Coordinator
    agents: AgentThreads

    @property
    def store(self) -> CoordinatorStore:
        return self.coordinator.store

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.coordinator.port}"

    def describe(self) -> str:
        return self.agents.describe()


@contextmanager
def running_coordinator(
    kits: Kits,
    home: Path,
    *,
    db_url: str | None = None,
    liveness_s: float = 10.0,
    heartbeat_s: float = 1.0,
    round_retries: int = 3,
    retry_backoff: Backoff = TEST_RETRY_BACKOFF,
    withdrawal_backoff: Backoff = TEST_WITHDRAWAL_BACKOFF,
    **options: Any,
) -> Iterator[Coordinator]:
    """A real coordinator on an ephemeral port of 127.0.0.1, stopped at the end.

    ``options`` go to :class:`Coordinator` (e.g. ``stream_idle_s``, ``per_site_streams``).
    Retries and withdrawals back off for tenths of seconds and seconds, not the defaults'
    5 s and 30 s, so tests stay fast.
    """
    coordinator = Coordinator(
        kits.coordinator,
        home,
        listen="127.0.0.1:0",
        db_url=db_url,
        heartbeat_s=heartbeat_s,
        liveness_s=liveness_s,
        round_retries=round_retries,
        retry_backoff=retry_backoff,
        withdrawal_backoff=withdrawal_backoff,
        **options,
    )
    try:
        coordinator.start()
        yield coordinator
    finally:
        coordinator.stop()


@contextmanager
def deployment(
    kits: Kits,
    workdir: Path,
    *,
    sites: Iterable[str] = HOSPITALS,
    db_url: str | None = None,
    liveness_s: float = 10.0,
    heartbeat_s: float = 1.0,
    poll_wait: float = 1.0,
    mods: Mapping[str, Sequence[Mod]] | None = None,
) -> Iterator[Deployment]:
    """A coordinator plus one agent thread per heart-disease hospital in ``sites``.

    ``mods`` turns the named sites malicious (:class:`TamperedAgent`).

    Agents stop first (their long-polls end with the coordinator), then the coordinator;
    an agent thread that does not end has its worker process killed.
    """
    with running_coordinator(
        kits, workdir / "home", db_url=db_url, liveness_s=liveness_s, heartbeat_s=heartbeat_s
    ) as coordinator:
        agents = AgentThreads()
        try:
            for site in sites:
                agents.start(
                    kits.sites[site],
                    heart_data(site),
                    address=f"127.0.0.1:{coordinator.port}",
                    state_dir=workdir / "state" / site,
                    poll_wait=poll_wait,
                    mods=(mods or {}).get(site, ()),
                )
            yield Deployment(coordinator, agents)
        finally:
            agents.stop.set()
            coordinator.stop()  # ends the agents' open calls now; stop() again is harmless
            agents.close()
