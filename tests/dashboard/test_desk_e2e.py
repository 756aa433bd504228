"""Issue 14's whole path in a real headless Chromium: a study lead at her desk submits a study
through the HTTP API (``fedcare.Client``), watches it on the dashboard, a hospital's data
steward approves its plan in the site console, the rounds appear on the study page without a
reload, and the report downloads.

Everything is real: a coordinator with mutual-TLS gRPC and its HTTPS API (the federation's
certificate), a governed site agent that runs only approved plans, the site console over the
site's home, Debian's Chromium driven by Playwright. Screenshots of each step are kept
(``FEDCARE_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedcare.dashboard.api import create_app
from fedcare.dashboard.client import Client
from fedcare.dashboard.console import create_console_app
from fedcare.dashboard.console_auth import ensure_token
from fedcare.dashboard.serve import serve_api, serve_http
from fedcare.site.approvals import ApprovalStore
from fedcare.strategy.plan import plan_for_study

from ..conftest import require_mirror
from ..deployment.helpers import AgentThreads, heart_study, provision, running_coordinator
from ..deployment.test_governance import start_agent
from .browser import chromium, screenshot, sign_in  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow
ROUNDS = 3


def _wait_pending(state: Path, study: str, plan_hash: str, agents: AgentThreads) -> None:
    end = time.monotonic() + 90
    while (row := ApprovalStore.in_state_dir(state).get(study, plan_hash)) is None:
        assert time.monotonic() < end, f"the plan never reached the site\n{agents.describe()}"
        time.sleep(0.2)
    assert row.status == "pending"


def test_submit_from_a_desk_approve_in_the_console_watch_live_and_download(
    tmp_path: Path,
    chromium: Any,  # noqa: F811
) -> None:
    require_mirror()
    expect = pytest.importorskip("playwright.sync_api").expect
    kits = provision(tmp_path / "federation", ("site-a",), name="desk-e2e")
    study = heart_study(
        name="desk-study", rounds=ROUNDS, min_sites=1, approval_wait=3600,
        preprocessing={"impute": "mean", "scale": "local"},
    )  # fmt: skip
    study_file = tmp_path / "desk-study.yaml"
    study_file.write_text(yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))
    plan_hash = plan_for_study(study).hash
    home = tmp_path / "home"
    with running_coordinator(kits, home, round_retries=1) as coordinator:
        agents = AgentThreads()
        api = serve_api(
            create_app(coordinator.store, coordinator.audit, home=home),
            *("127.0.0.1", 0, kits.coordinator / "cert.pem", kits.coordinator / "key.pem"),
        )
        console = None
        try:
            state = start_agent(agents, kits, "site-a", "cleveland", tmp_path, coordinator.port)
            lea = coordinator.store.add_user("lea", "study-lead")
            base = f"https://127.0.0.1:{api.port}"
            # 1. the study lead submits from her desk, over TLS with the federation's CA
            with Client(base, token=lea, ca=kits.coordinator / "ca.pem") as client:
                study_id = client.submit(study_file)["id"]
            assert coordinator.store.get_study(study_id).owner == "lea"

            # 2. she follows it on the dashboard: it waits for the site's approval
            desk = chromium.new_context(ignore_https_errors=True, accept_downloads=True)
            page = desk.new_page()
            sign_in(page, base, lea, f"/studies/{study_id}")
            loads: list[str] = []
            page.on("load", lambda _: loads.append(page.url))
            _wait_pending(state, study.name, plan_hash, agents)
            expect(page.locator("#study-reason")).to_contain_text("approval", timeout=60_000)
            screenshot(page, tmp_path, "desk-1-awaiting-approval")

            # 3. the steward approves the plan in the site console
            token, _ = ensure_token(state)
            console = serve_http(create_console_app(state, kits.sites["site-a"], token),
                                 "127.0.0.1", 0)  # fmt: skip
            steward = chromium.new_context().new_page()
            curl = f"http://127.0.0.1:{console.port}"
            steward.goto(curl + "/plans")
            steward.fill("#name", "Dr Steward")
            steward.fill("#token", token)
            steward.click("button[type=submit]")
            steward.click("#pending a")
            assert steward.inner_text("#plan-hash") == plan_hash
            steward.click("#approve")
            assert "approved" in steward.inner_text("#done")
            screenshot(steward, tmp_path, "desk-2-console-approved")

            # 4. the rounds appear on her page as they complete, without a reload
            expect(page.locator("#study-status")).to_have_text("finished", timeout=120_000)
            assert loads == [], f"the study page reloaded: {loads}"
            timeline = page.inner_text("#timeline")
            for n in range(1, ROUNDS + 1):
                assert f"{n}\tsite-a" in timeline or f"\n{n}\t" in timeline, timeline
            assert "its update was used" in timeline and "model update" in timeline
            expect(page.locator("#model-link")).to_have_text(
                coordinator.store.list_models()[0].version  # registered at the end, linked live
            )
            assert page.inner_text("#rounds-done") == str(ROUNDS)
            assert page.query_selector("#curves .main-svg") is not None  # plotly drew curves
            screenshot(page, tmp_path, "desk-3-finished")

            # 5. and downloads the report
            with page.expect_download() as download:
                page.click("#report-download")
            report = Path(download.value.path()).read_text()
            assert "<html" in report[:2000].lower() and "desk-study" in report
            desk.close()
        finally:
            if console is not None:
                console.stop()
            api.stop()
            agents.stop.set()
            coordinator.stop()
            agents.close()
    audit = (home / "audit.jsonl").read_text()
    assert '"study-submitted"' in audit and "lea" in audit
    approvals = ApprovalStore.in_state_dir(state).get(study.name, plan_hash)
    assert approvals is not None and approvals.status == "approved"
