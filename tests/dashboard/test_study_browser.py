"""The study pages in a real headless Chromium: sign in, submit a study on the page, watch a
new round appear in the timeline and the learning curves without reloading, download the
report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .browser import chromium, page, screenshot, sign_in  # noqa: F401  (fixtures)
from .helpers import EXAMPLE, Api
from .rounds import play_round, running_study


def test_rounds_appear_live_and_the_report_downloads(api: Api, page: Any, tmp_path: Path) -> None:  # noqa: F811
    sid = running_study(api.store, "heart-live", owner="study-lead-person")
    play_round(api.store, sid, 1)
    sign_in(page, api.url, api.tokens["study-lead"], f"/studies/{sid}")
    page.wait_for_selector('#timeline tr[data-round="1"][data-site="swiss"][data-status="refused"]')
    assert "the plan's dataset is not allowed" in page.inner_text("#timeline")
    page.wait_for_selector("#curves .main-svg")  # plotly drew the curves
    page.wait_for_selector("#live-note:has-text('Updates live')")
    page.evaluate("window.__notReloaded = true")
    screenshot(page, tmp_path, "study-round-1")

    play_round(api.store, sid, 2, auroc=0.8)
    page.wait_for_selector('#timeline tr[data-round="2"][data-site="hungary"]', timeout=5000)
    page.wait_for_selector('#curves[data-last-round="2"]', timeout=5000)
    assert page.evaluate("window.__notReloaded") is True
    assert page.inner_text("#rounds-done") == "2"
    timeline = page.inner_text("#timeline")
    assert "no reply in time" in timeline and "its update was used" in timeline
    screenshot(page, tmp_path, "study-round-2")

    with page.expect_download() as download:
        page.click("#report-download")
    saved = tmp_path / "report.html"
    download.value.save_as(saved)
    assert "heart-live" in saved.read_text()

    page.click("#cancel-form button")
    page.wait_for_selector("#study-status:has-text('cancelled')")
    assert api.store.get_study(sid).status == "cancelled"
    screenshot(page, tmp_path, "study-cancelled")


def test_a_study_lead_submits_a_study_on_the_page(api: Api, page: Any, tmp_path: Path) -> None:  # noqa: F811
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({**yaml.safe_load(EXAMPLE.read_text()), "name": "from-page"}))
    sign_in(page, api.url, api.tokens["study-lead"], "/studies/new")
    page.set_input_files("#study", str(study))
    page.click("#submit-form button[type=submit]")  # without queue: no site offers the data
    page.wait_for_selector("#submit-error")
    assert "offered by 0 of the 2 sites" in page.inner_text("#submit-error")
    screenshot(page, tmp_path, "submit-refused")
    page.set_input_files("#study", str(study))
    page.check("input[name=queue]")
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("h1:has-text('from-page')")
    (stored,) = api.store.list_studies()
    assert stored.owner == "study-lead-person" and page.url.endswith(f"/studies/{stored.id}")
    screenshot(page, tmp_path, "submitted")
