"""The HTML report renders its plots in a real headless Chromium, offline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fedcare.cli.output import write_outputs
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation

from ..conftest import require_mirror

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium on this machine (.ci/run installs Debian's chromium)")


def test_report_plots_render_offline_in_chromium(tmp_path: Path) -> None:
    require_mirror()
    browser = _chromium()
    study = StudyConfig.from_yaml(EXAMPLES / "heart-disease.yaml").with_overrides(rounds=3)
    _, report = write_outputs(run_simulation(study), tmp_path)
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        # no network at all: every script must be inline
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=5000",
        "--dump-dom",
        report.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    # plotly draws each figure into an <svg class="main-svg">; three figures, each >= 1 svg
    assert dom.count('class="main-svg"') >= 3, dom[:2000]
    assert "heatmap" in dom or "hm" in dom
    assert "cleveland" in dom
