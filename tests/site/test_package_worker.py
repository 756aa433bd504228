"""A deployed site runs study packages only in sandboxed runners, refuses what a malicious one
returns with its reason, and serves the next task (issue 13 item 5)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcare.models.packaged import load_adapter
from fedcare.packages.sandbox import bwrap_available
from fedcare.packages.store import PackageStore
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.site.packages import PACKAGES_DIR
from fedcare.site.worker import TaskWorker
from tests.packages.conftest import EXAMPLE
from tests.site.test_worker import _data

EVIL = Path(__file__).parents[1] / "packages" / "fixtures" / "evil"
BWRAP, WHY = bwrap_available()


def _spec(store: PackageStore, folder: Path, **options: str) -> dict[str, Any]:
    ref = store.add_folder(folder)
    manifest = store.manifest(ref)
    return {
        "kind": "package",
        "package": ref,
        "name": manifest.name,
        "version": manifest.version,
        "task": manifest.task,
        "options": options,
    }


def _fit(model: dict[str, Any], params: ArrayRecord) -> Task:
    plan = {
        "dataset": "fixture",
        "model": model,
        "preprocessing": {"impute": "mean", "scale": "local"},
    }
    config = {"lr": 0.1, "epochs": 1, "seed": 3}
    return Task("s", 1, "south", "fit", params=params, config=config, plan=plan)


def _error(reply: Reply) -> tuple[str, str]:
    assert reply.error is not None, "the task should have been refused"
    return reply.error.kind, reply.error.message


@pytest.mark.skipif(not BWRAP, reason=f"bubblewrap unavailable here: {WHY}")
def test_the_site_refuses_a_malicious_package_and_serves_the_next_task(tmp_path: Path) -> None:
    config, _ = _data(tmp_path)
    width = config.datasets["fixture"].load().train.X.shape[1]
    state = tmp_path / "state"
    store = PackageStore(state / PACKAGES_DIR)  # what the agent fills after verifying
    good = _spec(store, EXAMPLE)
    params = load_adapter(store.folder(good["package"]), store.manifest(good["package"]))
    start = params.init_params((width,), np.random.default_rng(0))
    worker = TaskWorker("south", config, state, time_limit=60, sandbox="require")
    try:
        leak = worker.run(_fit(_spec(store, EVIL, attack="extra"), start))
        missing = {**good, "package": "sha256:" + "b" * 64}
        unavailable = worker.run(_fit(missing, start))
        ok = worker.run(_fit(good, start))  # the same worker, the next task
    finally:
        worker.stop()
    kind, message = _error(leak)
    assert kind == "package-output-refused" and "unexpected arrays ['leak']" in message
    isolation = leak.info["package_isolation"]
    assert isolation.startswith("bwrap")  # audited with the reply (site/mods.py audit_mod)
    kind, message = _error(unavailable)
    assert kind == "package-unavailable" and "is not in the package store" in message
    assert ok.error is None, ok.error
    assert (
        ok.arrays.shapes == {"w": (width,), "b": (1,)} and ok.info["package_isolation"] == isolation
    )
    assert ok.num_samples == len(config.datasets["fixture"].load().train)


class _Sink:
    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []

    def append(self, event: str, /, **data: Any) -> object:
        self.entries.append((event, data))
        return None


def test_the_audit_records_how_a_package_ran_and_why_it_was_refused() -> None:
    from fedcare.site.mods import audit_mod

    sink = _Sink()
    task = Task("s", 1, "south", "fit", plan={"dataset": "fixture"})
    refused = Reply.failure(task, "package-output-refused", "unexpected arrays ['leak']")
    refused = replace(refused, info={"package_isolation": "bwrap+uid:65534"})
    audit_mod(sink)(task, lambda t: refused)
    event, data = sink.entries[-1]
    assert event == "reply-sent" and data["error_kind"] == "package-output-refused"
    assert data["package_isolation"] == "bwrap+uid:65534"
