"""The site's worker process under the sandbox when the policy asks (issue 13 item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcare.site.policy import SitePolicy
from fedcare.site.sandbox import bwrap_available
from fedcare.site.worker import TaskWorker
from tests.site.test_worker import EDGES, HIST, _data, _hist, _task

BWRAP, WHY = bwrap_available()


@pytest.mark.skipif(not BWRAP, reason=f"bubblewrap unavailable here: {WHY}")
def test_a_worker_task_runs_inside_the_sandbox(tmp_path: Path) -> None:
    config, frame = _data(tmp_path)
    worker = TaskWorker(
        "south", config, tmp_path / "state", time_limit=60, min_cell=1, sandbox="require"
    )
    try:
        reply = worker.run(_task(HIST))
        again = worker.run(_task(HIST))  # the same sandboxed worker serves the next task
    finally:
        worker.stop()
    counts, _ = _hist(reply)
    truth, _ = np.histogram(pd.to_numeric(frame["glucose"]).dropna(), bins=EDGES)
    np.testing.assert_array_equal(counts, truth)
    assert reply.info["isolation"] == "bwrap" and again.info["isolation"] == "bwrap"
    assert again.error is None


def test_require_without_bwrap_refuses_each_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    bwrap_available.cache_clear()
    try:
        worker = TaskWorker(
            "south", _data(tmp_path)[0], tmp_path / "s", time_limit=9, sandbox="require"
        )
        reply = worker.run(_task(HIST))
    finally:
        bwrap_available.cache_clear()
    assert reply.error is not None and reply.error.kind == "sandbox-unavailable"
    assert reply.error.message.startswith("sandbox-unavailable: the site policy requires one")
    assert "bwrap is not installed (Debian package 'bubblewrap')" in reply.error.message


def test_the_policy_field_defaults_to_off_and_names_its_choices() -> None:
    assert SitePolicy().sandbox == "off"
    assert SitePolicy.from_dict({"sandbox": "require"}).sandbox == "require"
    with pytest.raises(Exception, match="sandbox"):
        SitePolicy.from_dict({"sandbox": "always"})
