"""A real headless Chromium for the dashboard's browser tests, driven by Playwright.

It is Debian's system Chromium (``shutil.which("chromium")``; CI installs the package), never
a browser Playwright downloads. Tests are skipped, saying why, where it or Playwright is
missing. Screenshots go under the test's ``tmp_path`` and, when ``FEDCARE_TEST_ARTIFACTS`` is
set, are copied there (CI keeps that folder as the run's artifacts).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (module-wide: starting one takes a second)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no system Chromium (`chromium` on PATH): apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (the dev extra)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh page (its own cookies). The federation's CA is not in Chromium's store, so
    certificate errors are ignored here: TLS itself is tested by the API tests."""
    context = chromium.new_context(ignore_https_errors=True, accept_downloads=True)
    try:
        yield context.new_page()
    finally:
        context.close()


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    """Save a full-page screenshot as ``name``.png (and copy it to the artifacts folder)."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    artifacts = os.environ.get("FEDCARE_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)
    return path


def sign_in(page: Any, base: str, token: str, next_path: str) -> None:
    """Sign in on the dashboard's form, then land on ``next_path``."""
    page.goto(f"{base}/login?next={next_path}")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{next_path}")
