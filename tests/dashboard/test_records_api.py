"""The records routes (models, analytics, ledger, audit, one site) against a real server
over real TLS, on records made through the store as the coordinator makes them (SQLite, and
PostgreSQL once)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.coordinator.files import record_kit

from .helpers import Api, raw_call, start_api
from .records_helpers import LEAD, analytics_job, private_rounds, refusal, register

V1 = "/api/v1"
runner = CliRunner(env={"COLUMNS": "240"})


def _versions(body: list[dict[str, object]]) -> list[object]:
    return [m["version"] for m in body]


def _lineage(api: Api) -> tuple[str, str, str, str]:
    """Four models, each built on the one before: the study lead's first, second and third,
    and between the second and third another lead's."""
    _, first = register(api.store, "first", LEAD)
    _, second = register(api.store, "second", LEAD, parent=first)
    _, other = register(api.store, "other", "someone-else", parent=second)
    _, third = register(api.store, "third", LEAD, parent=other)
    return first, second, other, third


def test_a_study_lead_sees_only_models_of_their_studies(api: Api) -> None:
    first, second, other, third = _lineage(api)
    study = api.store.get_model(first).study_id
    lead, auditor = api.tokens["study-lead"], api.tokens["auditor"]
    status, models = api.call("GET", f"{V1}/models", lead)
    assert status == 200 and _versions(models) == [first, second, third]
    assert models[0]["study_id"] == study and models[0]["study_name"] == "first"
    assert models[1]["parent"] == first and models[0]["sites"] == 1
    assert models[0]["model_hash"] == api.store.get_model(first).model_hash
    for path in ("", "/lineage", "/download"):
        status, body, _ = raw_call(api, "GET", f"{V1}/models/{other}{path}", token=lead)
        assert status == 404 and other.encode() in body
    assert api.call("GET", f"{V1}/models/m-nope", auditor)[0] == 404
    status, models = api.call("GET", f"{V1}/models", auditor)
    assert _versions(models) == [first, second, other, third]
    status, card = api.call("GET", f"{V1}/models/{second}", lead)
    assert status == 200 and card == api.store.get_model(second).card
    assert card["model"]["parent"] == first and card["not_participating"] == {
        "va": "timeout: too slow"
    }


def test_lineage_names_the_parent_and_hides_another_leads_models(api: Api) -> None:
    first, second, other, third = _lineage(api)
    lead, auditor = api.tokens["study-lead"], api.tokens["auditor"]
    status, lineage = api.call("GET", f"{V1}/models/{second}/lineage", lead)
    assert status == 200
    assert [(m["version"], m["visible"]) for m in lineage["ancestors"]] == [(first, True)]
    assert lineage["ancestors"][0]["study_name"] == "first"
    assert _versions(lineage["descendants"]) == [third]  # not the other lead's model
    _, lineage = api.call("GET", f"{V1}/models/{third}/lineage", lead)
    assert lineage["ancestors"][0] == {"version": other, "visible": False}
    assert _versions(lineage["ancestors"]) == [other, second, first]
    _, lineage = api.call("GET", f"{V1}/models/{first}/lineage", auditor)
    assert lineage["ancestors"] == [] and _versions(lineage["descendants"]) == [
        second,
        other,
        third,
    ]


def test_the_download_holds_what_models_export_writes(api: Api, tmp_path: Path) -> None:
    _, first = register(api.store, "first", LEAD)
    _, second = register(api.store, "second", LEAD, parent=first)
    status, body, headers = raw_call(
        api, "GET", f"{V1}/models/{second}/download", token=api.tokens["study-lead"]
    )
    assert status == 200 and headers["content-type"] == "application/zip"
    assert f'filename="model-{second}.zip"' in headers["content-disposition"]
    out = tmp_path / "export"
    done = runner.invoke(app, ["models", "export", second, "--out", str(out), "--home",
                               str(api.home)])  # fmt: skip
    assert done.exit_code == 0, done.output
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.namelist() == [
            "model_card.json",
            "lineage.json",
            "params.npz",
            "bundle.json",
            "manifest.json",
        ]
        for name in archive.namelist():
            assert archive.read(name) == (out / name).read_bytes(), name
    lineage = json.loads((out / "lineage.json").read_text())
    assert [m["version"] for m in lineage] == [second, first]


def test_analytics_jobs_and_their_results(api: Api) -> None:
    mine, pending = analytics_job(api.store, LEAD), analytics_job(api.store, LEAD, result=False)
    other = analytics_job(api.store, "someone-else")
    training, _ = register(api.store, "train", LEAD)
    lead = api.tokens["study-lead"]
    status, jobs = api.call("GET", f"{V1}/analytics", lead)
    assert status == 200 and [j["id"] for j in jobs] == [pending, mine]
    assert jobs[1]["dataset"] == "heart-disease" and jobs[1]["queries"][0]["type"] == "count"
    status, job = api.call("GET", f"{V1}/analytics/{mine[:10]}", lead)
    assert status == 200 and job["id"] == mine and job["status"] == "running"
    assert job["result"]["queries"][0]["count"] == 42.0
    assert job["spec"]["name"] == "ages"
    assert api.call("GET", f"{V1}/analytics/{pending}", lead)[1]["result"] is None
    assert api.call("GET", f"{V1}/analytics/{other}", lead)[0] == 404
    status, body = api.call("GET", f"{V1}/analytics/{training}", lead)
    assert status == 404 and "not an analytics job" in body["detail"]
    status, jobs = api.call("GET", f"{V1}/analytics", api.tokens["auditor"])
    assert {j["id"] for j in jobs} == {mine, pending, other}


def test_the_ledger_shows_what_the_store_holds(api: Api) -> None:
    mine = private_rounds(api.store, LEAD, "mine")
    other = private_rounds(api.store, "someone-else", "other")
    status, ledger = api.call("GET", f"{V1}/ledger", api.tokens["operator"])
    assert status == 200
    rows = api.store.privacy_ledger()
    by_site = {(e["site"], e["dataset"]): e for e in ledger["sites"]}
    hungary = [r for r in rows if r.site_id == "hungary"]
    assert by_site["hungary", "heart-disease"]["epsilon_spent"] == hungary[-1].epsilon_after
    assert by_site["hungary", "heart-disease"]["rounds"] == 4
    assert by_site["hungary", "heart-disease"]["studies"] == 2
    assert by_site["va", "heart-disease"]["epsilon_spent"] == api.store.site_epsilon(other)["va"]
    per_study = {(e["study_id"], e["site"]): e for e in ledger["studies"]}
    for study in (mine, other):
        for site, eps in api.store.site_epsilon(study).items():
            assert per_study[study, site]["epsilon_after"] == eps
    assert per_study[mine, "hungary"]["rounds"] == [1, 2]
    status, ledger = api.call("GET", f"{V1}/ledger", api.tokens["study-lead"])
    assert {e["study_id"] for e in ledger["studies"]} == {mine}
    lead_sites = {(e["site"], e["dataset"]): e for e in ledger["sites"]}
    # the site's budget so far counts every study; the lead's counts only their own rounds
    assert lead_sites["hungary", "heart-disease"]["epsilon_spent"] == hungary[-1].epsilon_after
    assert lead_sites["hungary", "heart-disease"]["rounds"] == 2


def _audit_entries(api: Api) -> list[str]:
    return (api.home / "audit.jsonl").read_text().splitlines()


def test_audit_pages_verification_and_export(api: Api, tmp_path: Path) -> None:
    record_kit(api.home, api.ca.parent)  # as `fedcare coordinator start` does
    for n in range(5):
        api.audit.person_action("user-added", "operator-person", name=f"person-{n}")
    op = api.tokens["operator"]
    for path in ("/audit", "/audit/verify", "/audit/export"):
        status, body, _ = raw_call(api, "GET", V1 + path, token=api.tokens["study-lead"])
        assert status == 403 and b"audit trail" in body
    status, page = api.call("GET", f"{V1}/audit?offset=1&limit=2", op)
    assert status == 200 and page["total"] == 5 == len(_audit_entries(api))
    assert [e["seq"] for e in page["entries"]] == [4, 3]
    assert page["entries"][0]["data"]["name"] == "person-3"
    assert page["head"]["seq"] == 5 and len(page["head"]["hash"]) == 64
    status, check = api.call("GET", f"{V1}/audit/verify", api.tokens["auditor"])
    assert status == 200 and check["ok"] and check["signatures_checked"]
    assert check["entries"] == 5 and "intact" in check["summary"]
    cli = runner.invoke(app, ["audit", "verify", str(api.home / "audit.jsonl"), "--kit",
                              str(api.ca.parent)])  # fmt: skip
    assert cli.exit_code == 0 and f"checkpoint: {check['checkpoint']}" in cli.stdout
    status, exported, headers = raw_call(api, "GET", f"{V1}/audit/export", token=op)
    assert status == 200 and "coordinator-audit.jsonl" in headers["content-disposition"]
    out = tmp_path / "cli-export.jsonl"
    cli = runner.invoke(app, ["audit", "export", str(api.home / "audit.jsonl"), "--out",
                              str(out), "--kit", str(api.ca.parent)])  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert exported == out.read_bytes()

    lines = _audit_entries(api)  # someone edits entry 3 (a name) in the file
    lines[2] = lines[2].replace("person-2", "person-X")
    (api.home / "audit.jsonl").write_text("\n".join(lines) + "\n")
    status, check = api.call("GET", f"{V1}/audit/verify", op)
    assert status == 200 and not check["ok"] and check["first_bad_line"] == 3
    assert "line 3" in check["summary"] and check["problem"]
    status, body = api.call("GET", f"{V1}/audit/export", op)
    assert status == 409 and "force=true" in body["detail"]
    status, exported, _ = raw_call(api, "GET", f"{V1}/audit/export?force=true", token=op)
    marked = [json.loads(line) for line in exported.splitlines()]
    assert status == 200 and [m["verified"] for m in marked] == [True, True, False, False, False]
    assert marked[2]["problem"] == check["problem"]


def test_one_site_with_its_datasets_and_refusals(api: Api) -> None:
    mine = private_rounds(api.store, LEAD, "mine")
    other = private_rounds(api.store, "someone-else", "other")
    refusal(api.store, mine, "hungary", "the plan is not approved at this site")
    refusal(api.store, other, "hungary", "the budget for heart-disease is spent")
    status, site = api.call("GET", f"{V1}/sites/hungary", api.tokens["study-lead"])
    assert status == 200 and site["id"] == "hungary" and site["state"] == "connected"
    assert site["version"] == "9.9" and site["status"] == "active"
    (dataset,) = site["datasets"]
    assert dataset["name"] == "heart-disease" and dataset["train_rows"] == 200
    assert dataset["summary"] == "3 columns: age, sex, chol"
    assert dataset["schema"]["digest"].startswith("sha256:")
    (line,) = site["refusals"]  # only the lead's own study
    assert line["study_id"] == mine and line["study_name"] == "mine"
    assert line["line"] == (
        "site hungary refused round 1 (fit): policy-refused: the plan is not approved at this site"
    )
    _, site = api.call("GET", f"{V1}/sites/hungary", api.tokens["operator"])
    assert [r["study_id"] for r in site["refusals"]] == [other, mine]  # newest study first
    _, va = api.call("GET", f"{V1}/sites/va", api.tokens["operator"])
    assert va["refusals"] == [] and va["state"] == "never connected" and va["datasets"] == []
    status, body = api.call("GET", f"{V1}/sites/nowhere", api.tokens["operator"])
    assert status == 404 and "'nowhere'" in body["detail"]


def test_records_main_flow_on_postgresql(tmp_path: Path, pg_schemas) -> None:  # type: ignore[no-untyped-def]
    with start_api(tmp_path, pg_schemas()) as api:
        record_kit(api.home, api.ca.parent)
        _, first = register(api.store, "first", LEAD)
        _, second = register(api.store, "second", LEAD, parent=first)
        _, other = register(api.store, "other", "someone-else")
        study = private_rounds(api.store, LEAD, "private")
        refusal(api.store, study, "hungary", "the plan is not approved at this site")
        job = analytics_job(api.store, LEAD)
        api.audit.person_action("user-added", "operator-person", name="x")
        lead = api.tokens["study-lead"]
        assert _versions(api.call("GET", f"{V1}/models", lead)[1]) == [first, second]
        assert api.call("GET", f"{V1}/models/{other}", lead)[0] == 404
        lineage = api.call("GET", f"{V1}/models/{second}/lineage", lead)[1]
        assert _versions(lineage["ancestors"]) == [first]
        status, body, _ = raw_call(api, "GET", f"{V1}/models/{second}/download", token=lead)
        assert status == 200 and zipfile.ZipFile(io.BytesIO(body)).namelist()[0].endswith(".json")
        assert api.call("GET", f"{V1}/analytics/{job}", lead)[1]["result"] is not None
        ledger = api.call("GET", f"{V1}/ledger", lead)[1]
        eps = {e["site"]: e["epsilon_after"] for e in ledger["studies"]}
        assert eps == pytest.approx(api.store.site_epsilon(study))
        site = api.call("GET", f"{V1}/sites/hungary", lead)[1]
        assert "not approved" in site["refusals"][0]["line"]
        assert api.call("GET", f"{V1}/audit", lead)[0] == 403
        check = api.call("GET", f"{V1}/audit/verify", api.tokens["auditor"])[1]
        assert check["ok"] and check["signatures_checked"]


def test_a_site_revoked_in_the_coordinators_kit_shows_so_at_once(api: Api, tmp_path: Path) -> None:
    from fedcare.transport.provisioning import revoke_site

    private_rounds(api.store, LEAD, "mine")  # registers hungary (connected) and va
    record_kit(api.home, api.ca.parent)  # as `fedcare coordinator start` does
    revoked = revoke_site(tmp_path / "fed", "va")  # the kits of start_api's federation
    expected = f"revoked (certificate {revoked.serial:x} revoked at {revoked.revoked_at})"
    status, sites = api.call("GET", f"{V1}/sites", api.tokens["auditor"])
    assert status == 200 and {s["id"]: s["state"] for s in sites} == {
        "hungary": "connected",
        "va": expected,
    }
    assert api.call("GET", f"{V1}/sites/va", api.tokens["auditor"])[1]["state"] == expected
    status, page, _ = raw_call(api, "GET", "/sites", cookie=api.tokens["study-lead"])
    assert status == 200 and b"Access revoked (certificate" in page
