"""The site's model store (take, verify, index, retire, resolve ``--model``) and the signed
deployment message (a coordinator's signature verifies; a changed message, another CA's
certificate or a site's certificate does not)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509

from fedcare.errors import NotFoundError, ValidationError
from fedcare.inference.bundle import build_bundle, load_bundle, write_bundle
from fedcare.inference.deployment_wire import (
    bundle_files_of,
    deployment_task,
    sign_deployment,
    signed_message,
    verify_deployment_signature,
)
from fedcare.inference.store import ModelStore, resolve_bundle
from fedcare.transport.codec import decode_task, encode_task
from fedcare.transport.provisioning import create_federation


def _files(version: str = "m-1", weight: float = 1.0) -> dict[str, bytes]:
    return build_bundle(
        model={"kind": "logistic"},
        params={"weight": np.full(3, weight), "bias": np.zeros(1)},
        feature_names=["a", "b", "c"],
        input_shape=[3],
        preprocessing={"impute": "none", "scale": "none"},
        card={"model": {"version": version}},
        source={"version": version, "study_id": "s-1"},
    )


def test_take_verifies_keeps_and_indexes(tmp_path: Path) -> None:
    store = ModelStore.in_state_dir(tmp_path / "state")
    assert store.versions() == {}
    files = _files()
    folder = store.take(files, deployment_id="dep-1", approved_by="approval-2")
    assert folder == tmp_path / "state" / "models" / "m-1"
    entry = store.versions()["m-1"]
    digest = load_bundle(folder / "bundle").bundle_hash
    assert entry["bundle_sha256"] == entry["stored_sha256"] == digest
    assert (entry["deployment_id"], entry["approved_by"], entry["status"]) == (
        "dep-1",
        "approval-2",
        "active",
    )
    assert store.bundle("m-1").card == {"model": {"version": "m-1"}}
    (folder / "monitoring.json").write_text("{}")  # what monitoring keeps beside the bundle
    store.take(_files(weight=2.0), deployment_id="dep-2", approved_by="approval-3")
    assert np.array_equal(store.bundle("m-1").params["weight"], np.full(3, 2.0))
    assert (folder / "monitoring.json").exists() and store.versions()["m-1"][
        "deployment_id"
    ] == "dep-2"
    assert store.retire("m-1")["status"] == "retired"
    assert json.loads((store.root / "index.json").read_text())["m-1"]["status"] == "retired"


def test_a_changed_file_is_refused_before_and_after_it_is_kept(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    files = _files()
    bad = {**files, "params.npz": files["params.npz"] + b"x"}
    with pytest.raises(ValidationError, match=r"file 'params\.npz' was changed"):
        store.take(bad, deployment_id="dep-1", approved_by="a")
    assert store.versions() == {} and not (tmp_path / "models" / "m-1" / "bundle").exists()
    with pytest.raises(ValidationError, match=r"'extra\.txt' is not in its manifest"):
        store.take({**files, "extra.txt": b""}, deployment_id="dep-1", approved_by="a")
    folder = store.take(files, deployment_id="dep-1", approved_by="a")
    (folder / "bundle" / "bundle.json").write_bytes(b"{}")
    with pytest.raises(ValidationError, match=r"file 'bundle\.json' was changed"):
        store.bundle("m-1")


def test_a_version_must_be_named_and_found(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ValidationError, match="not a valid name"):
        store.take(_files(version="../x"), deployment_id="d", approved_by="a")
    store.take(_files(), deployment_id="d", approved_by="a")
    with pytest.raises(NotFoundError, match=r"model 'm-2' is not in .* \(it holds: m-1\)"):
        store.path("m-2")


def test_resolve_bundle_takes_a_path_or_a_version(tmp_path: Path) -> None:
    state = tmp_path / "state"
    files = _files()
    ModelStore.in_state_dir(state).take(files, deployment_id="d", approved_by="a")
    by_version = resolve_bundle("m-1", state)
    by_path = resolve_bundle(str(write_bundle(files, tmp_path / "b.zip")), state)
    assert by_version.bundle_hash == by_path.bundle_hash
    resolve_bundle("m-1", state, expected_hash=by_version.bundle_hash)
    with pytest.raises(ValidationError, match="expected sha256:00"):
        resolve_bundle("m-1", state, expected_hash="sha256:00")
    with pytest.raises(NotFoundError, match="no bundle folder or zip, and model 'm-9'"):
        resolve_bundle("m-9", state)


def test_the_deployment_signature_binds_site_bundle_and_signer(tmp_path: Path) -> None:
    from fedcare.audit._format import load_private_key

    fed = create_federation(tmp_path / "fed", name="sig-test", sites=["a", "b"])
    other = create_federation(tmp_path / "other", name="sig-other", sites=["a"])
    ca = x509.load_pem_x509_certificate((fed.root / "ca" / "ca.pem").read_bytes())
    coordinator, site = fed.coordinator_kit, fed.site_kits["a"]
    message = signed_message("dep-1", "m-1", "A", "sha256:" + "ab" * 32)
    signature = sign_deployment(load_private_key(coordinator / "key.pem"), message)
    cert = (coordinator / "cert.pem").read_bytes()
    assert "OU=coordinator" in verify_deployment_signature(ca, cert, message, signature)
    for changed in (
        signed_message("dep-1", "m-1", "B", "sha256:" + "ab" * 32),  # another site
        signed_message("dep-1", "m-1", "A", "sha256:" + "cd" * 32),  # another bundle
    ):
        with pytest.raises(ValidationError, match="signature does not verify"):
            verify_deployment_signature(ca, cert, changed, signature)
    foreign = other.coordinator_kit
    foreign_sig = sign_deployment(load_private_key(foreign / "key.pem"), message)
    with pytest.raises(ValidationError, match="not issued by this federation's CA"):
        verify_deployment_signature(ca, (foreign / "cert.pem").read_bytes(), message, foreign_sig)
    site_sig = sign_deployment(load_private_key(site / "key.pem"), message)
    with pytest.raises(ValidationError, match="is not the coordinator's"):
        verify_deployment_signature(ca, (site / "cert.pem").read_bytes(), message, site_sig)


def test_a_deploy_task_carries_the_bundle_byte_for_byte() -> None:
    files = _files()
    facts = {"id": "dep-1", "version": "m-1", "site": "A", "bundle_sha256": "sha256:x"}
    task = decode_task(encode_task(deployment_task("A", files, facts)))
    assert task.kind == "deploy" and task.task_id == "dep-1/0/deploy/A"
    assert bundle_files_of(task) == (files, facts)


def test_the_site_commands_list_and_retire_the_store(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedcare.cli.main import app

    kit = create_federation(tmp_path / "fed", name="cli-store", sites=["a"]).site_kits["a"]
    state = tmp_path / "state"
    ModelStore.in_state_dir(state).take(_files(), deployment_id="dep-1", approved_by="approval-1")
    runner = CliRunner(env={"COLUMNS": "200"})
    listed = runner.invoke(app, ["site", "models", "--state", str(state), "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)["m-1"]["status"] == "active"
    missing = runner.invoke(app, ["site", "predict", "--model", "m-2", "--state", str(state),
                                  "--input", str(tmp_path / "x.csv")])  # fmt: skip
    assert missing.exit_code == 2 and "(it holds: m-1)" in " ".join(missing.output.split())
    retired = runner.invoke(app, ["site", "retire-model", "m-1", "--state", str(state),
                                  "--kit", str(kit), "--note", "replaced"])  # fmt: skip
    assert retired.exit_code == 0, retired.output
    assert ModelStore.in_state_dir(state).versions()["m-1"]["status"] == "retired"
    entries = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    assert entries[-1]["event"] == "model-retired" and entries[-1]["data"]["note"] == "replaced"
