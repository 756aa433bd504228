"""A steward approves a plan in the site console, in a real headless Chromium, and the study
proceeds.

A real coordinator and a real governed site agent over mutual TLS (as in the deployment
tests); a study waits for the site's approval (the agent refuses its tasks and records the
plan as pending). The console is served on the site's home; Chromium (Debian's, driven by
Playwright, offline: tests/dashboard/browser.py) signs in with the console token, opens the
pending plan, clicks "Approve", sees it approved; the study then completes, and the console's
studies page shows what left the site: a model update and its size.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from fedcare.dashboard.console import create_console_app
from fedcare.dashboard.console_auth import ensure_token
from fedcare.dashboard.serve import serve_http
from fedcare.site.approvals import ApprovalStore
from fedcare.strategy.plan import plan_for_study

from ..conftest import require_mirror
from ..deployment.helpers import (
    AgentThreads,
    heart_study,
    provision,
    running_coordinator,
    submit,
    wait_for_status,
)
from ..deployment.test_governance import start_agent
from .browser import chromium, page, screenshot  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


def _wait_pending(state: Path, study: str, plan_hash: str, describe: object) -> None:
    end = time.monotonic() + 90
    while (row := ApprovalStore.in_state_dir(state).get(study, plan_hash)) is None:
        assert time.monotonic() < end, f"the plan never reached the site as pending\n{describe}"
        time.sleep(0.2)
    assert row.status == "pending"


def test_approve_in_the_console_and_the_study_proceeds(tmp_path: Path, page: Any) -> None:  # noqa: F811
    require_mirror()
    kits = provision(tmp_path / "federation", ("site-a",), name="console-browser")
    study = heart_study(
        name="console-study", rounds=1, min_sites=1, approval_wait=3600,
        preprocessing={"impute": "mean", "scale": "local"},
    )  # fmt: skip
    plan_hash = plan_for_study(study).hash
    with running_coordinator(kits, tmp_path / "home", round_retries=1) as coordinator:
        agents = AgentThreads()
        try:
            state = start_agent(agents, kits, "site-a", "cleveland", tmp_path, coordinator.port)
            study_id = submit(coordinator.store, study)
            _wait_pending(state, study.name, plan_hash, agents.describe())
            token, _ = ensure_token(state)
            app = create_console_app(state, kits.sites["site-a"], token)
            server = serve_http(app, "127.0.0.1", 0)
            url = f"http://127.0.0.1:{server.port}"
            try:
                page.goto(url + "/plans")  # not signed in: the sign-in page
                assert "/signin" in page.url
                page.fill("#name", "Dr Browser")
                page.fill("#token", token)
                page.click("button[type=submit]")
                page.click("#pending a")  # the pending plan's "Review"
                assert page.inner_text("#plan-hash") == plan_hash
                assert "awaiting your decision" in page.inner_text("#status")
                page.click("#approve")
                assert "approved" in page.inner_text("#done")
                assert page.inner_text("#status").startswith("approved until")
                page.goto(url + "/plans")
                decided = page.inner_text("#decided")
                assert plan_hash in decided and "approved until" in decided
                assert page.query_selector("#pending") is None
                screenshot(page, tmp_path, "console-approved")

                wait_for_status(coordinator.store, study_id, "completed",
                                describe=agents.describe)  # fmt: skip
                page.goto(url + "/studies")
                studies = page.inner_text("main")
                assert study_id in studies and "model update" in studies, studies
                screenshot(page, tmp_path, "console-studies")
            finally:
                server.stop()
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()
    row = ApprovalStore.in_state_dir(state).get(study.name, plan_hash)
    assert row is not None and row.status == "approved"
