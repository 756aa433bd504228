"""The site console over a real site home, served by uvicorn on 127.0.0.1 (plain HTTP).

Sign-in with the local token, sessions and CSRF; the steward's decisions made with HTTP POSTs
land in the same approvals store and the same signed audit log as the CLI's; the pages show
what the plan hash covers and the package diff.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from typer.testing import CliRunner

from fedcare.cli.main import app as cli_app
from fedcare.dashboard.console_auth import TOKEN_FILE, ensure_token
from fedcare.errors import ConfigError
from fedcare.records.messages import Reply, Task
from fedcare.site.mods import audit_mod, refuse_task
from fedcare.site.plans import Refusal
from fedcare.site.stewardship import open_site_audit, verify_site_audit
from fedcare.transport.framed import frame_reply

from .console_site import Console, make_site_home, serve_console


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with serve_console(make_site_home(tmp_path)) as running:
        yield running


def _audit(home: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (home / "audit.jsonl").read_text().splitlines()]


def test_every_route_needs_a_session(console: Console) -> None:
    routes = [r for r in console.app.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 12, [r.path for r in routes]
    client = console.client()
    checked = 0
    for route in routes:
        path = route.path.replace("{approval_id}", "1")
        for method in sorted(route.methods):
            if path == "/signin":
                continue
            answer = client.request(method, path, data={"csrf": "x", "note": "n"})
            if method == "GET":
                assert answer.status_code == 303, (method, path, answer.status_code)
                assert answer.headers["location"].startswith("/signin"), (method, path)
            else:
                assert answer.status_code == 401, (method, path, answer.status_code)
            checked += 1
    assert checked >= 11
    assert console.site.row(*console.site.pending_plain).status == "pending"


def test_a_wrong_token_is_refused(console: Console) -> None:
    client = console.client()
    answer = client.post("/signin", data={"token": "not-the-token", "name": "Eve"})
    assert answer.status_code == 401 and "That sign-in token is not this site" in answer.text
    assert "fedcare_console" not in answer.headers.get("set-cookie", "")
    assert client.get("/plans").status_code == 303
    nameless = client.post("/signin", data={"token": console.token, "name": ""})
    assert nameless.status_code == 400 and "fedcare_console" not in nameless.headers.get(
        "set-cookie", ""
    )
    good = client.post("/signin", data={"token": console.token, "name": "Ann"})
    cookie = good.headers["set-cookie"].lower()
    assert good.status_code == 303 and "httponly" in cookie and "samesite=strict" in cookie


def test_a_post_needs_the_sessions_csrf_token_and_origin(console: Console) -> None:
    client, csrf = console.signed_in()
    row = console.site.row(*console.site.pending_plain)
    url = f"/plans/{row.id}/approve"
    assert client.post(url, data={"until": "2099-01-01"}).status_code == 403
    assert client.post(url, data={"until": "2099-01-01", "csrf": csrf + "x"}).status_code == 403
    foreign = client.post(
        url, data={"until": "2099-01-01", "csrf": csrf}, headers={"Origin": "http://evil.example"}
    )
    assert foreign.status_code == 403
    other, _ = console.signed_in("Someone Else")
    assert other.post(url, data={"until": "2099-01-01", "csrf": csrf}).status_code == 403
    assert console.site.row(*console.site.pending_plain).status == "pending"
    signout = client.post("/signout", data={"csrf": csrf})
    assert signout.status_code == 303 and client.get("/plans").status_code == 303


def test_approve_seals_stores_and_audits_the_decision(console: Console) -> None:
    site = console.site
    client, csrf = console.signed_in("Dr Ann Steward")
    row = site.row(*site.pending_package)
    listing = client.get("/plans").text
    assert site.pending_package[1] in listing and site.pending_plain[1] in listing
    page = client.get(f"/plans/{row.id}").text
    assert site.pending_package[1] in page and "awaiting your decision" in page
    for covered in ("dataset", "privacy mode", "model", "training", "site half", "code"):
        assert f'<th style="width: 12rem">{covered}</th>' in page, covered
    # the package review: signer, files and the diff against the approved 1.0.0
    assert "researcher alice" in page and "trusted" in page
    assert '<p id="package-changes">Against numpy_logistic 1.0.0 (sha256:' in page
    assert '<span class="add">+REVISION = 2</span>' in page, page

    answer = client.post(
        f"/plans/{row.id}/approve", data={"csrf": csrf, "until": "2099-06-30", "note": "IRB 42"}
    )
    assert (
        answer.status_code == 303 and answer.headers["location"] == f"/plans/{row.id}?done=approve"
    )
    decided = site.row(*site.pending_package)
    assert decided.status == "approved" and decided.note == "IRB 42"
    assert decided.until is not None and decided.until.isoformat() == "2099-06-30T23:59:59+00:00"
    assert site.store().check(*site.pending_package).ok  # sealed: the agent would run it
    last = _audit(site.home)[-1]
    assert last["event"] == "approval" and last["actor"] == "site-a:steward"
    assert last["data"]["steward"] == "Dr Ann Steward" and last["data"]["via"] == "console"
    assert last["data"]["plan_hash"] == site.pending_package[1]
    assert verify_site_audit(site.home, site.kit).ok
    shown = client.get(f"/plans/{row.id}?done=approve").text
    assert "approved until 2099-06-30" in shown and "may run now" in shown


def test_refuse_and_revoke(console: Console) -> None:
    site = console.site
    client, csrf = console.signed_in("Bo")
    plain = site.row(*site.pending_plain)
    assert (
        client.post(f"/plans/{plain.id}/refuse", data={"csrf": csrf, "note": "no"}).status_code
        == 303
    )
    assert site.row(*site.pending_plain).status == "refused"
    approved = site.row(*site.approved)
    answer = client.post(f"/plans/{approved.id}/revoke", data={"csrf": csrf, "note": "ended"})
    assert answer.status_code == 303
    assert site.row(*site.approved).status == "revoked"
    assert site.store().check(*site.approved).kind == "approval-revoked"
    events = [(e["event"], e["data"].get("steward")) for e in _audit(site.home)[-2:]]
    assert events == [("refusal", "Bo"), ("revocation", "Bo")]
    # approve again with an expiry in the past: refused, nothing changes
    past = client.post(f"/plans/{approved.id}/approve", data={"csrf": csrf, "until": "2001-01-01"})
    assert past.status_code == 400 and "in the past" in past.text
    assert site.row(*site.approved).status == "revoked"
    assert verify_site_audit(site.home, site.kit).ok
    listing = client.get("/plans").text
    assert "refused" in listing and "approval withdrawn (revoked)" in listing


def test_policy_ledger_audit_and_studies_pages(console: Console) -> None:
    client, _ = console.signed_in()
    policy = client.get("/policy").text
    assert str(console.site.policy) in policy and "alice" in policy and "Smallest cohort" in policy
    assert client.get("/ledger").status_code == 200
    audit = client.get("/audit").text
    assert "Intact:" in audit and "agent-started" in audit and "approval" in audit
    only = client.get("/audit", params={"event": "approval"}).text
    assert "agent-started</td>" not in only
    assert "No study has sent a task" in client.get("/studies").text
    # the audit log edited by hand: the console says so
    log = console.site.home / "audit.jsonl"
    log.write_text(log.read_text().replace("ethics ref 1", "ethics ref 2"))
    assert "NOT intact:" in client.get("/audit").text


def test_the_token_file_is_private_and_created_once(tmp_path: Path) -> None:
    token, created = ensure_token(tmp_path)
    path = tmp_path / TOKEN_FILE
    assert created and len(token) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(tmp_path) == (token, False)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        ensure_token(tmp_path)


def test_the_cli_refuses_a_network_address_without_tls(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    result = CliRunner().invoke(
        cli_app, ["site", "console", "--home", str(tmp_path / "home"), "--host", "0.0.0.0"]
    )
    assert result.exit_code == 2 and "--cert and --key" in result.output, result.output
    assert not (tmp_path / "home" / TOKEN_FILE).exists()


def test_the_studies_page_shows_the_kind_and_size_of_each_reply(console: Console) -> None:
    site = console.site
    plan = {"study": "plain-study", "dataset": "heart-disease", "plan_hash": site.pending_plain[1]}
    answered = Task("study-1", 1, "site-a", "evaluate", plan=plan)
    refused = Task("study-1", 2, "site-a", "fit", plan=plan)
    reply = Reply("study-1", 1, "site-a", "evaluate", num_samples=30, metrics={"auroc": 0.8})
    with open_site_audit(site.home, site.kit) as audit:  # the agent's outermost mod
        mod = audit_mod(audit)
        mod(answered, lambda _: reply)
        mod(refused, lambda t: refuse_task(audit, t, Refusal("plan-not-approved", "no")))
    client, _ = console.signed_in()
    page = client.get("/studies").text
    assert "study-1" in page and "plain-study" in page
    assert "test metrics" in page and f"{frame_reply(reply).size} bytes" in page  # as sent
    assert "plan-not-approved" in page and "refusal or failure notice (no data)" in page
    assert "1 answered with results, 1 refused" in page
