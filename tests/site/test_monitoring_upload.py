"""A site's monitoring summaries leave only while its policy in force allows ``monitoring``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fedcare.inference.store import INDEX_FILE, ModelStore
from fedcare.site.monitoring_upload import MONITORING_SENT_FILE, MonitoringUploads
from fedcare.site.policy_watch import PolicyFile

VERSION = "v3"


class Recorder:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def append(self, event: str, **data: Any) -> None:
        self.entries.append({"event": event, **data})

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["event"] == name]


def _store(tmp_path: Path) -> ModelStore:
    store = ModelStore.in_state_dir(tmp_path / "state")
    (store.root / VERSION).mkdir(parents=True)
    index = {VERSION: {"status": "active", "deployment_id": "dep-1", "bundle_sha256": "x"}}
    (store.root / INDEX_FILE).write_text(json.dumps(index))
    (store.root / VERSION / "monitoring.json").write_text(json.dumps({"predictions": {"n": 40}}))
    return store


def _policy(path: Path, outputs: list[str]) -> None:
    path.write_text(f"allowed_outputs: [{', '.join(outputs)}]\n")
    stat = path.stat()  # a new mtime, so the watcher sees the change within the same second
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_a_policy_without_monitoring_keeps_the_summary_until_it_allows_it(
    tmp_path: Path,
) -> None:
    store, audit = _store(tmp_path), Recorder()
    policy = tmp_path / "policy.yaml"
    _policy(policy, ["model_updates", "metrics"])
    gov = SimpleNamespace(policy_file=PolicyFile(policy, audit), audit=audit)
    uploads = MonitoringUploads(store, "cleveland", gov)

    assert uploads.due() == [] and uploads.due() == []  # withheld, audited once
    withheld = audit.events("monitoring-withheld")
    assert len(withheld) == 1 and "does not allow monitoring" in withheld[0]["outcome"]
    sent = json.loads((store.root / MONITORING_SENT_FILE).read_text())
    assert sent[VERSION]["outcome"].startswith("withheld: this site's policy")

    _policy(policy, ["model_updates", "metrics", "monitoring"])
    [reply] = uploads.due()  # the same summary goes once the policy allows it
    assert (reply.study_id, reply.round, reply.info["version"]) == ("dep-1", 1, VERSION)
    assert json.loads(reply.arrays["monitoring.json"].tobytes()) == {"predictions": {"n": 40}}
    uploads.sent(reply, "accepted")
    assert uploads.due() == []
    assert [e["outcome"] for e in audit.events("monitoring-sent")] == ["accepted"]


@pytest.mark.parametrize("content", ["allowed_outputs: [rows]\n", None])
def test_no_valid_policy_in_force_sends_nothing(tmp_path: Path, content: str | None) -> None:
    store, audit = _store(tmp_path), Recorder()
    policy = tmp_path / "policy.yaml"
    _policy(policy, ["monitoring"])
    watched = PolicyFile(policy, audit)
    if content is None:
        policy.unlink()
    else:
        policy.write_text(content)
    uploads = MonitoringUploads(
        store, "cleveland", SimpleNamespace(policy_file=watched, audit=audit)
    )
    assert uploads.due() == []
    [withheld] = audit.events("monitoring-withheld")
    assert withheld["outcome"] == "withheld: no valid site policy is in force"


def test_without_a_steward_every_changed_summary_is_sent(tmp_path: Path) -> None:
    store = _store(tmp_path)
    uploads = MonitoringUploads(store, "cleveland", None)
    [reply] = uploads.due()
    uploads.sent(reply, "accepted")
    assert uploads.due() == []
    (store.root / VERSION / "monitoring.json").write_text(json.dumps({"predictions": {"n": 41}}))
    assert len(uploads.due()) == 1
