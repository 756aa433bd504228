"""The dashboard's sign-in and pages over real TLS: the cookie, its protections, the headers."""

from __future__ import annotations

from .helpers import Api, raw_call

V1 = "/api/v1"


def _sign_in(api: Api, token: str, next_path: str = "/studies") -> tuple[int, dict[str, str]]:
    body = f"token={token}&next={next_path}".encode()
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": api.url}
    status, _, headers = raw_call(api, "POST", "/login", body=body, headers=form)
    return status, headers


def test_signing_in_sets_a_protected_cookie_and_is_audited(api: Api) -> None:
    status, headers = _sign_in(api, api.tokens["study-lead"], "/studies")
    assert status == 303 and headers["location"] == "/studies"
    cookie = headers["set-cookie"].lower()
    assert "fedcare_session=" in cookie and "httponly" in cookie and "secure" in cookie
    assert "samesite=strict" in cookie
    entries = (api.home / "audit.jsonl").read_text()
    assert '"signed-in"' in entries and "study-lead-person" in entries


def test_a_bad_token_gets_the_form_again_with_a_plain_reason(api: Api) -> None:
    status, headers = _sign_in(api, "fc_0.nope")
    assert status == 401 and "set-cookie" not in {k.lower() for k in headers}
    status, body, _ = raw_call(api, "GET", "/login")
    assert status == 200 and b"Access token" in body


def test_after_sign_in_goes_only_to_a_local_page(api: Api) -> None:
    status, headers = _sign_in(api, api.tokens["operator"], "//evil.example/x")
    assert status == 303 and headers["location"] == "/studies"


def test_pages_redirect_to_sign_in_and_carry_security_headers(api: Api) -> None:
    status, _, headers = raw_call(api, "GET", "/studies")
    assert status == 303 and headers["location"] == "/login?next=/studies"
    mine = api.store.create_study("heart-fedavg", {"rounds": 5}, 1, owner="study-lead-person")
    api.store.create_study("someone-elses", {"rounds": 5}, 1, owner="other")
    status, body, headers = raw_call(api, "GET", "/studies", cookie=api.tokens["study-lead"])
    assert status == 200
    page = body.decode()
    assert "heart-fedavg" in page and mine in page and "someone-elses" not in page
    assert "waiting to start" in page and "0 of 5" in page
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_a_change_by_cookie_must_come_from_the_dashboards_own_origin(api: Api) -> None:
    sid = api.store.create_study("heart", {"rounds": 3}, 7, owner="study-lead-person")
    lead = api.tokens["study-lead"]
    cancel = f"{V1}/studies/{sid}/cancel"
    for headers in ({}, {"Origin": "https://evil.example"}):
        status, body, _ = raw_call(api, "POST", cancel, cookie=lead, headers=headers)
        assert status == 403 and b"another site" in body
    assert api.store.get_study(sid).status == "pending"
    status, _, _ = raw_call(api, "POST", cancel, cookie=lead, headers={"Origin": api.url})
    assert status == 200 and api.store.get_study(sid).status == "cancelled"
    # reading by cookie needs no Origin (an EventSource sends the cookie only)
    assert raw_call(api, "GET", f"{V1}/studies", cookie=lead)[0] == 200
