"""``POST /api/v1/models/{version}/deploy`` and ``GET .../deployments`` over real TLS: who may
deploy which model, clear refusals of an unknown site or version, idempotence of an open
request, the audit entry; and ``fedcare models deploy|deployments --coordinator``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.dashboard.client import Client

from .helpers import Api, raw_call
from .records_helpers import LEAD, register

V1 = "/api/v1"


def _post(api: Api, path: str, token: str, body: object) -> tuple[int, object]:
    status, raw, _ = raw_call(
        api, "POST", V1 + path, token=token, body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    return status, json.loads(raw or b"null")


def test_leads_deploy_their_own_models_operators_any_auditors_none(api: Api) -> None:
    _, mine = register(api.store, "mine", LEAD)
    _, theirs = register(api.store, "theirs", "someone-else")
    lead, operator, auditor = (api.tokens[r] for r in ("study-lead", "operator", "auditor"))

    status, rows = _post(api, f"/models/{mine}/deploy", lead, {"sites": ["hungary", "va"]})
    assert status == 201, rows
    assert [(r["site_id"], r["status"], r["requested_by"]) for r in rows] == [  # type: ignore[union-attr]
        ("hungary", "requested", LEAD),
        ("va", "requested", LEAD),
    ]
    again = _post(api, f"/models/{mine}/deploy", operator, {"sites": ["hungary"]})[1]
    assert again[0]["id"] == rows[0]["id"]  # type: ignore[index]
    status, body = _post(api, f"/models/{theirs}/deploy", lead, {"sites": ["va"]})
    assert status == 404 and theirs in str(body)
    status, body = _post(api, f"/models/{mine}/deploy", auditor, {"sites": ["va"]})
    assert status == 403 and "may not deploy models" in str(body)
    status, body = _post(api, f"/models/{theirs}/deploy", operator, {"sites": ["nowhere"]})
    assert status == 422 and "unknown site(s) 'nowhere'" in str(body), body
    assert api.store.list_deployments(theirs) == []
    status, body = _post(api, f"/models/{mine}/deploy", operator, {"sites": []})
    assert status == 422

    status, listed = api.call("GET", f"{V1}/models/{mine}/deployments", auditor)
    assert status == 200 and [r["site_id"] for r in listed] == ["hungary", "va"]
    assert all(r["bundle_sha256"].startswith("sha256:") for r in listed)
    assert api.call("GET", f"{V1}/models/{theirs}/deployments", lead)[0] == 404
    events = [
        json.loads(line)
        for line in (api.home / "audit.jsonl").read_text().splitlines()
        if '"deployment-requested"' in line
    ]
    assert [(e["data"]["person"], e["data"]["site"]) for e in events] == [
        (LEAD, "hungary"),
        (LEAD, "va"),
    ]


def test_the_remote_cli_deploys_and_lists(api: Api) -> None:
    _, version = register(api.store, "remote", LEAD)
    base = ["--coordinator", api.url, "--ca", str(api.ca), "--json"]
    env = {"FEDCARE_TOKEN": api.tokens["operator"], "COLUMNS": "200"}
    runner = CliRunner(env=env)
    result = runner.invoke(app, ["models", "deploy", version, "--site", "va", *base])
    assert result.exit_code == 0, result.output
    assert [r["site_id"] for r in json.loads(result.stdout)] == ["va"]
    result = runner.invoke(app, ["models", "deployments", version, *base])
    assert result.exit_code == 0, result.output
    assert [(r["site_id"], r["status"]) for r in json.loads(result.stdout)] == [("va", "requested")]
    result = runner.invoke(app, ["models", "deploy", version, "--site", "x", *base])
    assert result.exit_code != 0 and "unknown site(s) 'x'" in result.output
    with Client(api.url, token=api.tokens["auditor"], ca=api.ca, timeout_s=10) as client:
        assert [r["site_id"] for r in client.deployments(version)] == ["va"]
