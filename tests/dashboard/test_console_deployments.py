"""A deployed model in the site console: the steward sees it beside the plans, with what the
model is and who asked, and approves it there; the site then takes it into its model store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedcare.audit._format import load_private_key
from fedcare.cli.governance import build_governance
from fedcare.inference.bundle import build_bundle
from fedcare.inference.deployment_wire import (
    AWAITING,
    deployment_task,
    sign_deployment,
    signed_message,
)
from fedcare.inference.store import ModelStore
from fedcare.records.messages import Task
from fedcare.site.deployments import SiteDeployments

from .console_site import Console, make_site_home, serve_console


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with serve_console(make_site_home(tmp_path)) as running:
        yield running


def _signed_task(kit: Path, version: str = "m-console") -> Task:
    files = build_bundle(
        model={"kind": "logistic"},
        params={"weight": np.ones(2), "bias": np.zeros(1)},
        feature_names=["age", "chol"],
        input_shape=[2],
        preprocessing={"impute": "none", "scale": "none"},
        source={"version": version, "study_id": "s-console"},
    )
    from fedcare.coordinator.deployments import bundle_hash

    digest = bundle_hash(files)
    coordinator = kit.parent.parent / "coordinator"
    message = signed_message("dep-console", version, "site-a", digest)
    facts = {
        "id": "dep-console", "version": version, "site": "site-a", "bundle_sha256": digest,
        "requested_by": "operator-ann", "requested_at": "2026-12-05T02:00:00+00:00",
        "signature": sign_deployment(load_private_key(coordinator / "key.pem"), message),
        "signer_cert_pem": (coordinator / "cert.pem").read_text(),
    }  # fmt: skip
    return deployment_task("site-a", files, facts)


def test_the_steward_approves_a_deployment_in_the_console(console: Console) -> None:
    site = console.site
    governance = build_governance(site.home, site.kit, None)
    try:
        deployments = SiteDeployments(site.home, site.kit, "site-a", governance)
        task = _signed_task(site.kit)
        first = deployments.handle(task)
        assert first.error is not None and first.error.kind == AWAITING
        client, csrf = console.signed_in("Dr Ann Steward")
        listing = client.get("/plans").text
        assert "deployment:m-console" in listing
        row = site.row("deployment:m-console", task.plan["deployment"]["bundle_sha256"])
        page = client.get(f"/plans/{row.id}").text
        assert "deployment of model" in page and "operator-ann" in page and "age, chol" in page
        answer = client.post(f"/plans/{row.id}/approve", data={"csrf": csrf, "note": "ok"})
        assert answer.status_code == 303
        taken = deployments.handle(task)
        assert taken.error is None and taken.info["status"] == "taken"
        assert taken.info["approved_by"] == row.approval_id
        entry = ModelStore.in_state_dir(site.home).versions()["m-console"]
        assert entry["bundle_sha256"] == task.plan["deployment"]["bundle_sha256"]
        assert deployments.decisions()[0][:2] == ("deployment:m-console", "approved")
    finally:
        governance.audit.close()
