"""Deploying a model to sites over a real federation: steward decisions, verification, the store.

One real coordinator and four governed :class:`SiteAgent` threads over mutual TLS (built as
``fedcare site start`` builds them). A heart-disease study with local scaling completes; its
model is deployed to two of the four hospitals with ``fedcare models deploy``; one steward
approves it (``fedcare site approve-deployment``), the other refuses it with a note. The
approving site keeps the verified bundle, with its own training statistics frozen in, and
``fedcare site predict --model VERSION`` runs from the store; the coordinator shows
taken/refused with the reason; a tampered bundle and a bad signature are refused by the site
naming the problem; both audit trails hold the entries.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fedcare.cli.governance import build_governance, steward_store
from fedcare.cli.main import app
from fedcare.coordinator.server import Coordinator
from fedcare.coordinator.store_deployments import DeploymentInfo
from fedcare.inference.deployment_wire import bundle_files_of, deployment_task
from fedcare.inference.store import ModelStore
from fedcare.site.agent import SiteAgent
from fedcare.strategy.plan import plan_for_study
from fedcare.transport.codec import decode_task, encode_task

from ..conftest import require_mirror
from .helpers import (
    HOSPITALS,
    AgentThreads,
    Kits,
    heart_data,
    heart_study,
    provision,
    running_coordinator,
    submit,
    wait_for_status,
)

pytestmark = pytest.mark.slow
SOON = datetime.now(timezone.utc) + timedelta(days=1)
WAIT_S = 60.0


@dataclass
class Federation:
    kits: Kits
    coordinator: Coordinator
    agents: AgentThreads
    root: Path
    version: str

    def state(self, site: str) -> Path:
        return self.root / "state" / site

    @property
    def home(self) -> Path:
        return self.root / "home"


def _start(agents: AgentThreads, kits: Kits, site: str, root: Path, port: int) -> None:
    state = root / "state" / site
    governance = build_governance(state, kits.sites[site], None)
    events: list[str] = []
    agent = SiteAgent(
        kits.sites[site], heart_data(site), state_dir=state, coordinator=f"127.0.0.1:{port}",
        poll_wait=1.0, time_limit=120.0, on_event=events.append, governance=governance,
    )  # fmt: skip

    def main() -> None:
        try:
            agent.run(agents.stop)
        except BaseException as err:
            agents.errors[site] = err

    thread = threading.Thread(target=main, name=f"agent-{site}", daemon=True)
    agents.agents[site], agents.threads[site] = agent, thread
    agents.events[site] = events  # type: ignore[assignment]
    thread.start()


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    require_mirror()
    root = tmp_path_factory.mktemp("model-deploy")
    kits = provision(root / "federation", HOSPITALS, name="deploy")
    the_study = heart_study(
        name="deploy-heart", rounds=2, preprocessing={"impute": "mean", "scale": "local"}
    )
    plan = plan_for_study(the_study).hash
    with running_coordinator(kits, root / "home") as coordinator:
        agents = AgentThreads()
        try:
            for site in HOSPITALS:
                steward_store(root / "state" / site, kits.sites[site]).approve(
                    the_study.name, plan, SOON
                )
                _start(agents, kits, site, root, coordinator.port)
            study_id = submit(coordinator.store, the_study)
            wait_for_status(coordinator.store, study_id, "completed", describe=agents.describe)
            (model,) = coordinator.store.list_models(study_id)
            yield Federation(kits, coordinator, agents, root, model.version)
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()


def _cli(*args: str) -> Any:
    result = CliRunner(env={"COLUMNS": "240"}).invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _wait(
    fed: Federation, site: str, done: Callable[[DeploymentInfo], bool], goal: str
) -> DeploymentInfo:
    end = time.monotonic() + WAIT_S
    while True:
        rows = fed.coordinator.store.list_deployments(fed.version, site)
        if rows and done(rows[-1]):
            return rows[-1]
        if time.monotonic() > end:
            pytest.fail(f"{site}: no {goal} within {WAIT_S:g} s: {rows}\n{fed.agents.describe()}")
        time.sleep(0.1)


def _audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_one_steward_approves_one_refuses_and_the_site_predicts_from_its_store(
    federation: Federation, tmp_path: Path
) -> None:
    fed, version = federation, federation.version
    out = _cli("models", "deploy", version, "--site", "cleveland", "--site", "hungary",
               "--home", str(fed.home), "--json")  # fmt: skip
    rows = json.loads(out.stdout)
    assert [(r["site_id"], r["status"]) for r in rows] == [
        ("cleveland", "requested"),
        ("hungary", "requested"),
    ]
    # asking again while open: the same deployments, nothing new
    again = json.loads(_cli("models", "deploy", version, "--site", "cleveland",
                            "--home", str(fed.home), "--json").stdout)  # fmt: skip
    assert again[0]["id"] == rows[0]["id"]
    for site in ("cleveland", "hungary"):
        pending = _wait(fed, site, lambda d: d.status == "pending", "pending decision")
        assert "fedcare site approve-deployment" in (pending.reason or "")
    listed = json.loads(_cli("site", "deployments", "--state", str(fed.state("cleveland")),
                             "--json").stdout)  # fmt: skip
    assert [(e["version"], e["status"]) for e in listed] == [(version, "pending")]
    assert listed[0]["bundle_sha256"] == rows[0]["bundle_sha256"]

    _cli("site", "approve-deployment", version, "--state", str(fed.state("cleveland")),
         "--kit", str(fed.kits.sites["cleveland"]))  # fmt: skip
    _cli("site", "refuse-deployment", version, "--note", "not validated on our population",
         "--state", str(fed.state("hungary")), "--kit", str(fed.kits.sites["hungary"]))  # fmt: skip
    taken = _wait(fed, "cleveland", lambda d: d.status == "taken", "taken")
    refused = _wait(fed, "hungary", lambda d: d.status == "refused", "refusal")
    assert refused.reason is not None and "not validated on our population" in refused.reason
    assert refused.reason.startswith("deployment-refused: the steward of hungary refused")

    store = ModelStore.in_state_dir(fed.state("cleveland"))
    entry = store.versions()[version]
    assert entry["status"] == "active" and entry["bundle_sha256"] == rows[0]["bundle_sha256"]
    assert taken.stored_sha256 == entry["stored_sha256"] != entry["bundle_sha256"]
    bundle = store.bundle(version)  # verified against the recorded hash
    assert bundle.statistics_source == "site-frozen"
    assert bundle.description["source"]["frozen_by"] == "cleveland"
    site = heart_data("cleveland").datasets["heart-disease"].load()
    assert bundle.description["source"]["frozen_rows"] == len(site.train.X)
    np.testing.assert_allclose(
        bundle.statistics["mean"],
        np.nanmean(site.train.X, axis=0),
        rtol=1e-12,  # type: ignore[index]
    )
    assert not ModelStore.in_state_dir(fed.state("hungary")).versions()

    rows_csv = tmp_path / "rows.csv"
    with rows_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", *bundle.features])
        writer.writerows([f"p{i}", *row] for i, row in enumerate(site.test.X.tolist()))
    scored = json.loads(_cli("site", "predict", "--model", version, "--state",
                             str(fed.state("cleveland")), "--input", str(rows_csv), "--out",
                             str(tmp_path / "p.csv"), "--id-column", "patient_id",
                             "--json").stdout)  # fmt: skip
    assert scored["rows"] == len(site.test.X) and scored["bundle_sha256"] == entry["stored_sha256"]
    models = json.loads(_cli("site", "models", "--state", str(fed.state("cleveland")),
                             "--json").stdout)  # fmt: skip
    assert list(models) == [version]

    shown = json.loads(_cli("models", "deployments", version, "--home", str(fed.home),
                            "--json").stdout)  # fmt: skip
    assert {(r["site_id"], r["status"]) for r in shown} == {
        ("cleveland", "taken"),
        ("hungary", "refused"),
    }
    coordinator_events = [
        (e["event"], e["data"].get("site")) for e in _audit(fed.home / "audit.jsonl")
        if e["event"].startswith("deployment-")
    ]  # fmt: skip
    for expected in [
        ("deployment-requested", "cleveland"),
        ("deployment-requested", "hungary"),
        ("deployment-taken", "cleveland"),
        ("deployment-refused", "hungary"),
    ]:
        assert expected in coordinator_events, coordinator_events
    cleveland = [e["event"] for e in _audit(fed.state("cleveland") / "audit.jsonl")]
    assert cleveland.index("deployment-received") < cleveland.index("model-taken")
    assert "approval" in cleveland
    hungary = [e["event"] for e in _audit(fed.state("hungary") / "audit.jsonl")]
    assert "refusal" in hungary and "model-taken" not in hungary
    taken_entry = [e for e in _audit(fed.state("cleveland") / "audit.jsonl")
                   if e["event"] == "model-taken"][-1]  # fmt: skip
    assert taken_entry["data"]["reference"] == f"frozen from {len(site.train.X)} training rows"
    assert (store.path(version) / "reference.json").is_file()  # the drift reference (H8)
    outcomes = tmp_path / "outcomes.csv"
    outcomes.write_text(
        "patient_id,label\n" + "".join(f"p{i},{int(y)}\n" for i, y in enumerate(site.test.y))
    )
    _cli("site", "feedback", "--model", version, "--state", str(fed.state("cleveland")),
         "--labels", str(outcomes), "--id-column", "patient_id", "--label-column", "label",
         "--bootstrap", "20")  # fmt: skip
    _monitoring_reaches_the_coordinator(fed, store, len(site.test.X))


def _monitoring_reaches_the_coordinator(fed: Federation, store: ModelStore, n: int) -> None:
    """The site sends monitoring.json (written by site feedback) when it changes; the
    coordinator keeps the latest valid one."""
    version = fed.version
    summary = json.loads((store.path(version) / "monitoring.json").read_text())
    assert summary["model"] == version and summary["site"] == "cleveland"
    assert summary["predictions"]["n"] == n
    kept = _wait(fed, "cleveland", lambda d: d.monitoring is not None, "monitoring summary")
    assert kept.monitoring == summary
    (store.path(version) / "monitoring.json").write_text(json.dumps({**summary, "rows": [1]}))
    sent = store.root / "monitoring-sent.json"
    end = time.monotonic() + WAIT_S
    while "refused" not in (sent.read_text() if sent.exists() else ""):
        assert time.monotonic() < end, fed.agents.describe()
        time.sleep(0.1)
    assert "unknown key(s) ['rows']" in json.loads(sent.read_text())[version]["outcome"]
    assert fed.coordinator.store.list_deployments(version, "cleveland")[-1].monitoring == summary
    table = _cli("models", "deployments", version, "--home", str(fed.home)).stdout
    assert f"{n} predictions" in table
    events = [e["event"] for e in _audit(fed.state("cleveland") / "audit.jsonl")]
    assert events.count("monitoring-sent") == 2


def _tampering(fed: Federation, change: Callable[[dict[str, bytes], dict[str, Any]], None]) -> Any:
    channel = fed.coordinator.servicer.deployments
    assert channel is not None
    honest = channel.payload

    def payload(info: DeploymentInfo) -> bytes:
        task = decode_task(honest(info))
        files, facts = bundle_files_of(task)
        change(files, facts)
        return encode_task(deployment_task(task.site_id, files, facts))

    return channel, honest, payload


@pytest.mark.parametrize(
    ("site", "problem"),
    [("switzerland", "bundle-invalid"), ("va", "signature-invalid")],
)
def test_a_tampered_deployment_is_refused_by_the_site_naming_the_problem(
    federation: Federation, site: str, problem: str
) -> None:
    fed = federation

    def change(files: dict[str, bytes], facts: dict[str, Any]) -> None:
        if problem == "bundle-invalid":
            files["params.npz"] = files["params.npz"][:-1] + bytes([files["params.npz"][-1] ^ 1])
        else:
            sig = bytearray(facts["signature"].encode())
            sig[10] = ord("A") if sig[10] != ord("A") else ord("B")
            facts["signature"] = sig.decode()

    channel, honest, payload = _tampering(fed, change)
    channel.payload = payload  # type: ignore[method-assign]
    try:
        _cli("models", "deploy", fed.version, "--site", site, "--home", str(fed.home))
        failed = _wait(fed, site, lambda d: d.status == "failed", "failure")
    finally:
        channel.payload = honest  # type: ignore[method-assign]
    assert failed.reason is not None and failed.reason.startswith(problem + ": "), failed.reason
    if problem == "bundle-invalid":
        assert "file 'params.npz' was changed" in failed.reason
    else:
        assert "signature does not verify" in failed.reason
    events = _audit(fed.state(site) / "audit.jsonl")
    rejected = [e for e in events if e["event"] == "deployment-rejected"]
    assert rejected and rejected[-1]["data"]["kind"] == problem, rejected
    assert not ModelStore.in_state_dir(fed.state(site)).versions()
    coordinator_events = [e["event"] for e in _audit(fed.home / "audit.jsonl")]
    assert "deployment-failed" in coordinator_events
