"""The site's worker process under the sandbox when the policy asks (issue 13 item 5)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcare.packages.sandbox import bwrap_available
from fedcare.site.agent import SiteAgent
from fedcare.site.approvals import ApprovalStore
from fedcare.site.config import SiteDataConfig
from fedcare.site.governance import SiteGovernance
from fedcare.site.policy import SitePolicy
from fedcare.site.worker import TaskWorker
from fedcare.transport.provisioning import create_federation
from tests.site.test_worker import EDGES, HIST, _data, _hist, _NoAudit, _task

BWRAP, WHY = bwrap_available()


@pytest.mark.skipif(not BWRAP, reason=f"bubblewrap unavailable here: {WHY}")
def test_a_worker_task_runs_inside_the_sandbox(tmp_path: Path) -> None:
    config, frame = _data(tmp_path)
    worker = TaskWorker(
        "south", config, tmp_path / "state", time_limit=60, min_cell=1, sandbox="require"
    )
    replies = []
    # a governed agent runs each task in a thread of its own (run_watched), and bwrap's
    # --die-with-parent follows the thread that started it: the worker must outlive that thread
    thread = threading.Thread(target=lambda: replies.append(worker.run(_task(HIST))))
    try:
        thread.start()
        thread.join(60)
        [reply] = replies
        first = worker._proc.popen.pid
        time.sleep(0.5)  # a bwrap killed with the thread is gone by then
        assert worker._proc.is_alive(), f"worker exited {worker._proc.exitcode} with its thread"
        again = worker.run(_task(HIST))  # the same sandboxed worker serves the next task
        assert worker._proc.popen.pid == first
        inside = _worker_pid(worker._proc.popen.pid)
        # the worker that ran it has its own network namespace and a read-only root
        assert os.readlink(f"/proc/{inside}/ns/net") != os.readlink("/proc/self/ns/net")
        root = [line.split() for line in Path(f"/proc/{inside}/mountinfo").read_text().splitlines()]
        assert any(f[4] == "/" and "ro" in f[5].split(",") for f in root)
    finally:
        worker.stop()
    counts, _ = _hist(reply)
    truth, _ = np.histogram(pd.to_numeric(frame["glucose"]).dropna(), bins=EDGES)
    np.testing.assert_array_equal(counts, truth)
    assert reply.info["isolation"] == "bwrap" and again.info["isolation"] == "bwrap"
    assert again.error is None


def _worker_pid(pid: int) -> int:
    """The process under bwrap's ``pid`` that runs the worker's Python."""
    for _ in range(5):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in map(int, children):
            if b"_sandboxed_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        pid = int(children[0])
    raise AssertionError("no worker process under bwrap")


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


def test_the_agent_passes_its_policy_sandbox_to_the_worker(tmp_path: Path) -> None:
    fed = create_federation(tmp_path / "fed", name="f", sites=["south"], coordinator_hosts=("x",))
    approvals = ApprovalStore.in_state_dir(tmp_path / "state")
    governance = SiteGovernance(SitePolicy(sandbox="prefer"), approvals, audit=_NoAudit())
    agent = SiteAgent(
        fed.site_kits["south"],
        SiteDataConfig(datasets={}),
        state_dir=tmp_path / "state",
        governance=governance,
    )
    assert agent.worker.sandbox == "prefer"


def test_the_policy_field_defaults_to_off_and_names_its_choices() -> None:
    assert SitePolicy().sandbox == "off"
    assert SitePolicy.from_dict({"sandbox": "require"}).sandbox == "require"
    with pytest.raises(Exception, match="sandbox"):
        SitePolicy.from_dict({"sandbox": "always"})
