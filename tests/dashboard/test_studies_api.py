"""Submitting and following studies over the HTTP API (real TLS, real SQLite): the checks of
``fedcare study submit``, package uploads verified against the federation CA, each site's part
in each round, and the study's results and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from fedcare.records.messages import ReplyError
from fedcare.transport.researchers import add_researcher
from tests.packages.distribution import build, tamper

from .helpers import EXAMPLE, Api, example_config, raw_call
from .rounds import SITES, UPDATE, play_round, register_sites, running_study

V1 = "/api/v1"


def _post(api: Api, path: str, token: str, body: bytes, kind: str) -> tuple[int, Any]:
    status, raw, _ = raw_call(
        api, "POST", path, token=token, body=body, headers={"Content-Type": kind}
    )
    return status, json.loads(raw or b"null")


def _submit(api: Api, role: str, doc: dict[str, Any] | str, queue: bool = True) -> tuple[int, Any]:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    body = json.dumps({"study": text, "queue": queue}).encode()
    return _post(api, f"{V1}/studies", api.tokens[role], body, "application/json")


def _audit(api: Api, event: str) -> list[dict[str, Any]]:
    lines = (api.home / "audit.jsonl").read_text().splitlines()
    return [e["data"] for e in map(json.loads, lines) if e["event"] == event]


def test_a_study_lead_submits_a_study_they_then_own(api: Api) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    status, body = _submit(api, "study-lead", doc)
    assert status == 201, body
    assert body["name"] == "heart-disease-fedavg" and body["status"] == "pending"
    assert body["owner"] == "study-lead-person" and body["rounds_total"] == 20
    # queued although no site offers the data and no coordinator runs: said as warnings
    assert any("offered by 0 of the 2 sites" in w for w in body["warnings"])
    stored = api.store.get_study(body["id"])
    assert stored.owner == "study-lead-person" and stored.config["model"] == {"kind": "logistic"}
    (entry,) = _audit(api, "study-submitted")
    assert entry["person"] == "study-lead-person" and entry["study_id"] == body["id"]
    assert entry["via"] == "api"
    status, mine = api.call("GET", f"{V1}/studies", api.tokens["study-lead"])
    assert [s["id"] for s in mine] == [body["id"]]


def test_a_study_that_could_not_run_is_refused_with_the_clis_reason(api: Api) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    status, body = _submit(api, "operator", {**doc, "rounds": 0})
    assert status == 422 and "field rounds" in body["detail"]
    assert "\n" not in body["detail"]
    status, body = _submit(api, "operator", {**doc, "strategy": {"name": "fedmagic"}})
    assert status == 422 and "unknown strategy 'fedmagic'" in body["detail"]
    status, body = _submit(api, "operator", "name: [unclosed")
    assert status == 422 and body["detail"].startswith("study: not valid YAML:")
    # without queue: the same refusal as the CLI's, telling how to queue over the API
    status, body = _submit(api, "operator", doc, queue=False)
    assert status == 422
    assert "offered by 0 of the 2 sites" in body["detail"]
    assert 'pass "queue": true to queue it' in body["detail"]
    status, body = _submit(
        api, "operator", {**doc, "model": {"kind": "package", "package": "model.fcpkg"}}
    )
    assert status == 422 and "upload the signed archive first" in body["detail"]
    assert api.store.list_studies() == []
    status, body = _submit(api, "auditor", doc)
    assert status == 403 and "auditor may not" in body["detail"]
    status, body = _post(api, f"{V1}/studies", api.tokens["operator"], b"{", "application/json")
    assert status == 422 and isinstance(body["detail"], str)


def test_a_signed_package_is_stored_and_a_tampered_one_refused(api: Api, tmp_path: Path) -> None:
    federation = api.home.parent / "fed"
    add_researcher(federation, "alice")
    built = build(tmp_path / "pk", federation)
    data = built.path.read_bytes()
    kind = "application/octet-stream"
    status, body = _post(api, f"{V1}/packages", api.tokens["study-lead"], data, kind)
    assert status == 201, body
    assert body["package"] == f"sha256:{built.hash}" and body["version"] == "1.0.0"
    assert (api.home / "packages" / f"{built.hash}.fcpkg").read_bytes() == data
    (entry,) = _audit(api, "package-uploaded")
    assert entry["person"] == "study-lead-person" and entry["signer"] == "alice"
    # a study naming the uploaded package by hash is accepted, resolved as the CLI does
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["model"] = {"kind": "package", "package": body["package"], "options": {"l2": 0.01}}
    status, study = _submit(api, "study-lead", doc)
    assert status == 201, study
    model = api.store.get_study(study["id"]).config["model"]
    assert model["package"] == body["package"] and model["requires"] == ["numpy"]

    bad = tamper(built.path, tmp_path / "tampered.fcpkg").read_bytes()
    (api.home / "packages" / f"{built.hash}.fcpkg").unlink()
    status, body = _post(api, f"{V1}/packages", api.tokens["operator"], bad, kind)
    assert status == 422 and "file model.py: SHA-256 differs from the manifest" in body["detail"]
    assert not (api.home / "packages" / f"{built.hash}.fcpkg").exists()
    status, body = _post(api, f"{V1}/packages", api.tokens["operator"], b"", kind)
    assert status == 422 and "empty" in body["detail"]
    status, body = _post(api, f"{V1}/packages", api.tokens["auditor"], data, kind)
    assert status == 403


def test_rounds_show_each_sites_part(api: Api) -> None:
    sid = running_study(api.store, owner="study-lead-person")
    play_round(api.store, sid, 1)
    # round 2 in progress: hungary replied, swiss has its task, va's was never picked up
    api.store.create_tasks(sid, 2, 0, [(s, "fit", None, None) for s in SITES])
    task = api.store.next_task_for("hungary")
    assert task is not None
    api.store.store_reply(task.id, "hungary", payload_digest=api.store.artifacts.put(UPDATE))
    api.store.next_task_for("swiss")
    status, rounds = api.call("GET", f"{V1}/studies/{sid[:8]}/rounds", api.tokens["study-lead"])
    assert status == 200
    first, second = rounds
    assert first["round"] == 1 and first["status"] == "completed"
    assert first["metrics"]["auroc"] == 0.51 and first["finished_at"]
    sites = first["sites"]
    assert sites["hungary"]["status"] == "aggregated"
    assert sites["hungary"]["reply_bytes"] == len(UPDATE) + 1
    assert sites["hungary"]["reply_kind"] == "fit" and sites["hungary"]["replied_at"]
    assert sites["hungary"]["metrics"] == {"auroc": 0.51, "accuracy": 0.51 - 0.1, "n": 50.0}
    assert sites["swiss"]["status"] == "refused"
    assert sites["swiss"]["reason"] == "policy-denied: the plan's dataset is not allowed"
    assert sites["swiss"]["reply_kind"] == "policy-denied"
    assert sites["va"]["status"] == "timed out" and sites["va"]["reply_bytes"] is None
    assert second["round"] == 2 and second["status"] == "running"
    assert second["finished_at"] is None
    assert {s: v["status"] for s, v in second["sites"].items()} == {
        "hungary": "replied",
        "swiss": "sent",
        "va": "sent",
    }
    assert api.call("GET", f"{V1}/studies/{sid}/rounds", None)[0] == 401


def test_a_round_shows_the_last_fit_and_its_evaluation_not_earlier_refusals(api: Api) -> None:
    """As the runner dispatches: fits refused while the plan awaited approval (attempts 0, 1),
    then the fit that went through (2) and the round's evaluation (3)."""
    store = api.store
    register_sites(store, ("hungary",))
    sid = store.create_study("heart", example_config(rounds=1), 7, owner="study-lead-person")
    store.set_study_status(sid, "running")
    evaluation = b"e" * 300
    for attempt, kind in ((0, "fit"), (1, "fit"), (2, "fit"), (3, "evaluate")):
        (task_id,) = store.create_tasks(sid, 1, attempt, [("hungary", kind, None, None)])
        assert store.next_task_for("hungary") is not None
        if attempt < 2:
            error = ReplyError("plan-not-approved", "awaiting the steward's approval")
            store.store_reply(task_id, "hungary", error=error)
        else:
            body = UPDATE if kind == "fit" else evaluation
            store.store_reply(task_id, "hungary", payload_digest=store.artifacts.put(body))
    record = {
        "round": 1,
        "fit": {"sampled_sites": ["hungary"], "failed_sites": {}, "site_info": {"hungary": {}}},
        "evaluate": {"per_site": {"hungary": {"auroc": 0.8, "n": 50}}, "weighted": {}},
    }
    store.record_round(sid, 1, params=b"p", state=b"s", record=record, duration_s=1.0)
    status, (entry,) = api.call("GET", f"{V1}/studies/{sid}/rounds", api.tokens["operator"])
    assert status == 200 and entry["attempt"] == 2
    part = entry["sites"]["hungary"]
    assert part["status"] == "aggregated" and part["reason"] is None
    assert part["reply_kind"] == "fit"
    assert part["reply_bytes"] == len(UPDATE) + len(evaluation)


def test_rounds_recorded_without_tasks_are_read_from_the_record(api: Api) -> None:
    sid = api.store.create_study("heart", example_config(rounds=3), 7)
    api.store.set_study_status(sid, "running")
    record = {
        "round": 1,
        "fit": {
            "sampled_sites": ["a", "b", "c", "d"],
            "site_info": {"a": {}, "b": {}},
            "rejected_sites": ["b"],
            "failed_sites": {
                "c": "no reply before the round closed (a grace period of 5 s after 2 sites "
                "replied, or its deadline)",
                "d": "plan-unknown: nope",
            },
            "site_timing": {
                "a": {"reply_s": 1.5, "outcome": "taken"},
                "b": {"reply_s": 2.25, "outcome": "taken"},
                "c": {"reply_s": None, "outcome": "late"},
                "d": {"reply_s": 0.5, "outcome": "failed"},
            },
        },
    }
    api.store.record_round(sid, 1, params=b"p", state=b"s", record=record, duration_s=1.0)
    status, (entry,) = api.call("GET", f"{V1}/studies/{sid}/rounds", api.tokens["auditor"])
    assert status == 200
    assert {s: v["status"] for s, v in entry["sites"].items()} == {
        "a": "aggregated",
        "b": "not used",
        "c": "timed out",
        "d": "refused",
    }
    assert {s: v["reply_s"] for s, v in entry["sites"].items()} == {
        "a": 1.5,
        "b": 2.25,
        "c": None,
        "d": 0.5,
    }
    assert entry["sites"]["c"]["reason"].startswith("no reply before the round closed")


def test_results_and_report_are_those_of_fedcare_study_report(api: Api) -> None:
    sid = running_study(api.store, "heart-report", owner="study-lead-person", rounds=2)
    play_round(api.store, sid, 1)
    play_round(api.store, sid, 2)
    api.store.set_study_status(sid, "completed")
    lead = api.tokens["study-lead"]
    status, results = api.call("GET", f"{V1}/studies/{sid}/results", lead)
    assert status == 200
    assert results["study"]["id"] == sid and results["study"]["status"] == "completed"
    assert [h["round"] for h in results["history"]] == [1, 2]
    assert results["sites"] == ["hungary"]
    status, page, headers = raw_call(api, "GET", f"{V1}/studies/{sid}/report", token=lead)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"heart-report" in page and b"<html" in page.lower()
    assert "sandbox" in headers["content-security-policy"]
    status, _, headers = raw_call(
        api, "GET", f"{V1}/studies/{sid}/report?download=true", token=lead
    )
    assert status == 200 and "attachment" in headers["content-disposition"]
    other = api.store.create_study("theirs", example_config(), 1, owner="someone-else")
    assert api.call("GET", f"{V1}/studies/{other}/report", lead)[0] == 404


def test_the_status_follows_new_rounds_and_refusals(api: Api) -> None:
    """Completed rounds are remembered between calls; what came after is read again."""
    sid = running_study(api.store)
    play_round(api.store, sid, 1, refused="swiss", silent=None)
    token = api.tokens["operator"]
    status, detail = api.call("GET", f"{V1}/studies/{sid}", token)
    assert status == 200 and [r["round"] for r in detail["rounds"]] == [1]
    assert detail["refusals"] == [
        "site swiss refused round 1 (fit): policy-denied: the plan's dataset is not allowed"
    ]
    assert len(api.call("GET", f"{V1}/studies/{sid}/rounds", token)[1]) == 1
    play_round(api.store, sid, 2, refused="hungary", silent=None)
    status, detail = api.call("GET", f"{V1}/studies/{sid}", token)
    assert [r["round"] for r in detail["rounds"]] == [1, 2]
    assert [line.split(" round ")[0] for line in detail["refusals"]] == [
        "site hungary refused",
        "site swiss refused",
    ]
    assert detail["last_round_sites"]["hungary"]["status"] == "failed"
    status, rounds = api.call("GET", f"{V1}/studies/{sid}/rounds", token)
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[1]["sites"]["hungary"]["status"] == "refused"
