"""The HTTP API against a real uvicorn server over real TLS, on SQLite (and PostgreSQL once)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import update

from fedcare.coordinator.db import UserRow

from . import matrix_core, matrix_records, matrix_studies
from .helpers import ROLES, Api, raw_call, start_api

V1 = "/api/v1"
_PARTS = (matrix_core, matrix_studies, matrix_records)
# Every route of the app x (no token, each role) -> the status it must answer (matrix_*.py).
# A new route fails test_authorization_matrix until it is added there, so no route is ever
# left unprotected by accident.
EXPECTED: dict[tuple[str, str], dict[str | None, int]] = {
    key: value for part in _PARTS for key, value in part.EXPECTED.items()
}


def _study(api: Api, owner: str | None = "study-lead-person", name: str = "heart") -> str:
    return api.store.create_study(name, {"rounds": 3}, 7, owner=owner)


def _routes(routes: list[Any]) -> set[tuple[str, str]]:
    """(method, path) of every route the app answers (schema or not), through included
    routers (FastAPI >= 0.130 keeps those as one entry holding the router; our routers carry
    their own prefix, so paths are whole)."""
    out = set()
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            out |= _routes(included.routes)
        for method in getattr(route, "methods", None) or ():
            if method not in ("HEAD", "OPTIONS"):
                out.add((method, route.path))
    return out


def test_authorization_matrix(tmp_path: Path) -> None:
    # many calls without a token: lift the limit on failed authentications for this test
    with start_api(tmp_path, None, failure_limit=100_000) as api:
        _check_matrix(api)


def _check_matrix(api: Api) -> None:
    missing = "add every new route to a tests/dashboard/matrix_*.py"
    assert _routes(api.app.routes) == set(EXPECTED), missing
    status, schema = api.call("GET", f"{V1}/openapi.json", api.tokens["auditor"])
    assert status == 200
    in_schema = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    api_routes = {(m, p) for m, p in EXPECTED if p.startswith(V1)}
    assert in_schema == api_routes - {("GET", f"{V1}/openapi.json")}
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    for (method, template), expected in EXPECTED.items():
        for role in (None, *ROLES):
            path = template
            for part in _PARTS:
                for placeholder, value in part.fill(api).items():
                    path = path.replace(placeholder, value)
            token = api.tokens[role] if role else None
            if template.startswith(V1):
                status, body, _ = raw_call(api, method, path, token=token)
            else:  # a page: signed in by the session cookie, from the page's own origin
                headers = {"Origin": api.url} if method != "GET" else {}
                status, body, _ = raw_call(api, method, path, cookie=token, headers=headers)
            assert status == expected[role], (method, template, role, body[:300])


def test_bad_tokens_are_refused_with_401(api: Api) -> None:
    good = api.tokens["operator"]
    for bad in ("", "nonsense", good[:-2] + "xx", "fc_0000000000000000.abc", good + "x"):
        status, body = api.call("GET", f"{V1}/studies", bad)
        assert status == 401, bad
        assert "invalid API token" in body["detail"]


def test_a_study_lead_sees_and_cancels_only_their_studies(api: Api) -> None:
    mine, host = _study(api, name="mine"), _study(api, owner=None, name="host")
    other = _study(api, owner="someone-else", name="other")
    lead = api.tokens["study-lead"]
    status, studies = api.call("GET", f"{V1}/studies", lead)
    assert status == 200 and [s["id"] for s in studies] == [mine]
    for sid in (host, other):
        assert api.call("GET", f"{V1}/studies/{sid}", lead)[0] == 404
        assert api.call("POST", f"{V1}/studies/{sid}/cancel", lead)[0] == 404
    assert api.store.get_study(host).status == "pending"
    for role in ("operator", "auditor"):
        status, studies = api.call("GET", f"{V1}/studies", api.tokens[role])
        assert {s["id"] for s in studies} == {mine, host, other}
    status, detail = api.call("GET", f"{V1}/studies/{mine}", lead)
    assert status == 200
    assert detail["name"] == "mine" and detail["rounds_total"] == 3 and detail["rounds"] == []
    assert api.call("GET", f"{V1}/studies/nope", api.tokens["operator"])[0] == 404


def test_cancel_is_audited_with_the_persons_name(api: Api) -> None:
    sid = _study(api)
    status, body = api.call("POST", f"{V1}/studies/{sid}/cancel", api.tokens["study-lead"])
    assert status == 200 and body["status"] == "cancelled"
    assert api.store.get_study(sid).reason == "cancelled by study-lead-person"
    status, body = api.call("POST", f"{V1}/studies/{sid}/cancel", api.tokens["operator"])
    assert status == 409 and "'cancelled'" in body["detail"]
    entries = [json.loads(line) for line in (api.home / "audit.jsonl").read_text().splitlines()]
    (entry,) = [e for e in entries if e["event"] == "study-cancel-requested"]
    assert entry["data"]["person"] == "study-lead-person"
    assert entry["data"]["study_id"] == sid and entry["data"]["role"] == "study-lead"
    assert api.call("POST", f"{V1}/studies/{_study(api)}/cancel", api.tokens["auditor"])[0] == 403


def test_sites_show_state_last_seen_version_and_datasets(api: Api) -> None:
    api.store.register_site("hungary", "abc1")
    api.store.touch_site("hungary", version="9.9", datasets={"heart-disease": {}})
    status, sites = api.call("GET", f"{V1}/sites", api.tokens["study-lead"])
    assert status == 200
    (site,) = sites
    assert site["id"] == "hungary" and site["state"] == "connected"
    assert site["version"] == "9.9" and site["datasets"] == ["heart-disease"]


def test_tokens_are_hashed_at_rest(api: Api) -> None:
    raw = b"".join(p.read_bytes() for p in api.home.glob("coordinator.db*"))
    assert raw  # the database is there
    for token in api.tokens.values():
        secret = token.partition(".")[2]
        assert token.encode() not in raw and secret.encode() not in raw


def test_expired_revoked_and_rotated_tokens(api: Api) -> None:
    lead, auditor = api.tokens["study-lead"], api.tokens["auditor"]
    api.store.revoke_user("study-lead-person")
    assert api.call("GET", f"{V1}/studies", lead)[0] == 401
    new = api.store.rotate_user("study-lead-person")
    assert api.call("GET", f"{V1}/studies", lead)[0] == 401
    assert api.call("GET", f"{V1}/studies", new)[0] == 200
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    with api.store.engine.begin() as conn:
        conn.execute(
            update(UserRow).where(UserRow.name == "auditor-person").values(expires_at=past)
        )
    assert api.call("GET", f"{V1}/studies", auditor)[0] == 401


def test_failed_authentications_are_rate_limited(tmp_path: Path) -> None:
    with start_api(tmp_path, None, failure_limit=3, failure_window_s=60) as api:
        for n in range(3):  # a forged X-Forwarded-For does not count as another client
            status, _ = api.call("GET", f"{V1}/studies", "fc_bad.token", client_ip=f"10.0.0.{n}")
            assert status == 401
        status, body = api.call("GET", f"{V1}/studies", api.tokens["operator"])
        assert status == 429 and "too many failed" in body["detail"]
        assert api.call("GET", f"{V1}/health")[0] == 200


def test_main_flow_on_postgresql(tmp_path: Path, pg_schemas) -> None:  # type: ignore[no-untyped-def]
    with start_api(tmp_path, pg_schemas()) as api:
        mine, host = _study(api), _study(api, owner=None)
        assert api.call("GET", f"{V1}/studies", None)[0] == 401
        status, studies = api.call("GET", f"{V1}/studies", api.tokens["study-lead"])
        assert status == 200 and [s["id"] for s in studies] == [mine]
        assert api.call("GET", f"{V1}/studies/{host}", api.tokens["study-lead"])[0] == 404
        status, body = api.call("POST", f"{V1}/studies/{mine}/cancel", api.tokens["study-lead"])
        assert status == 200 and body["status"] == "cancelled"
        assert api.call("POST", f"{V1}/studies/{host}/cancel", api.tokens["auditor"])[0] == 403
        assert api.call("GET", f"{V1}/studies", "fc_0.bad")[0] == 401


def test_study_detail_shows_rounds_and_each_sites_part_in_the_last_round(api: Api) -> None:
    sid = _study(api)
    api.store.set_study_status(sid, "running")
    record = {
        "round": 1,
        "fit": {
            "sampled_sites": ["hungary", "va", "swiss"],
            "site_info": {"hungary": {}, "va": {}},
            "rejected_sites": ["va"],
            "failed_sites": {"swiss": "timeout: no reply within 30 s"},
            "num_contributions": 1,
        },
    }
    api.store.record_round(sid, 1, params=b"p", state=b"s", record=record, duration_s=1.0)
    status, detail = api.call("GET", f"{V1}/studies/{sid}", api.tokens["study-lead"])
    assert status == 200
    assert detail["status"] == "running" and detail["rounds_done"] == 1
    (summary,) = detail["rounds"]
    assert summary["aggregated_sites"] == ["hungary"]
    assert detail["last_round_sites"] == {
        "hungary": {"status": "aggregated", "reason": None},
        "swiss": {"status": "failed", "reason": "timeout: no reply within 30 s"},
        "va": {"status": "not used", "reason": "rejected by the aggregation"},
    }
