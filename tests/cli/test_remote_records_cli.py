"""``fedcare models list|show|export`` and ``fedcare analytics`` from a desk (``--coordinator``):
against the real API served over real TLS they print and write what the same commands do on
the coordinator's host; ``--json`` prints the API's shapes in both modes; an analytics job
submitted through the API is the job the host's ``--federation`` queues, owned by the caller."""

from __future__ import annotations

import json
import threading
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.cli.models import unpack_export
from fedcare.coordinator.analytics_jobs import RESULT_KIND
from fedcare.dashboard.client import AnalyticsJob, Client, ModelBrief, ModelLineage
from fedcare.errors import FedcareError
from fedcare.records.arrays import ArrayRecord
from fedcare.transport.codec import encode_arrays
from tests.conftest import require_mirror

from ..dashboard.helpers import Api
from ..dashboard.records_helpers import LEAD, register
from .remote_helpers import remote_env

runner = CliRunner(env={"COLUMNS": "200"})
SPEC = Path(__file__).resolve().parents[2] / "examples" / "analytics" / "heart-disease.yaml"


def _both(api: Api, tmp_path: Path, args: list[str]) -> tuple[str, str]:
    """The stdout of ``args`` on the host (``--home``) and from a desk (``--coordinator``)."""
    env = remote_env(api, tmp_path)
    local = runner.invoke(app, [*args, "--home", str(api.home)], env=env)
    remote = runner.invoke(app, [*args, "--coordinator", api.url, "--ca", str(api.ca)], env=env)
    assert local.exit_code == 0 and remote.exit_code == 0, (local.output, remote.output)
    return local.stdout, remote.stdout


def test_models_list_and_show_print_the_same_lines(api: Api, tmp_path: Path) -> None:
    _, first = register(api.store, "first", LEAD)
    study, second = register(api.store, "second", None, parent=first)
    local, remote = _both(api, tmp_path, ["models", "list"])
    assert remote == local and first in remote and second in remote
    local, remote = _both(api, tmp_path, ["models", "list", "--study", study])
    assert remote == local and second in remote and remote.count(first) == 1  # its parent
    local, remote = _both(api, tmp_path, ["models", "show", second])
    assert remote == local
    assert f"lineage: {second} <- {first}" in remote and f"study {study}" in remote


def test_models_json_is_the_apis_shape_in_both_modes(api: Api, tmp_path: Path) -> None:
    _, first = register(api.store, "first", LEAD)
    _, second = register(api.store, "second", None, parent=first)
    for args in (["models", "list"], ["models", "show", second]):
        local, remote = _both(api, tmp_path, [*args, "--json"])
        assert json.loads(local) == json.loads(remote)
    listed = json.loads(_both(api, tmp_path, ["models", "list", "--json"])[1])
    assert [m["version"] for m in listed] == [first, second]
    assert listed[1]["parent"] == first and listed[0]["study_name"] == "first"
    card = json.loads(_both(api, tmp_path, ["models", "show", second, "--json"])[1])
    assert card["model"]["parent"] == first
    with Client(api.url, api.tokens["auditor"], ca=api.ca) as client:  # the typed shapes
        assert all(set(m) == set(ModelBrief.__annotations__) for m in client.models())
        lineage = client.lineage(second)
        assert set(lineage) == set(ModelLineage.__annotations__)
        assert set(lineage["model"]) == {*ModelBrief.__annotations__, "visible"}


def test_remote_export_writes_the_hosts_files(api: Api, tmp_path: Path) -> None:
    _, first = register(api.store, "first", LEAD)
    _, second = register(api.store, "second", LEAD, parent=first)
    here, there = tmp_path / "here", tmp_path / "there"
    _both(api, tmp_path, ["models", "export", second, "--out", str(here)])
    _both(api, tmp_path, ["models", "export", second, "--out", str(there)])
    names = sorted(p.name for p in here.iterdir())
    assert names == [
        "bundle.json",
        "lineage.json",
        "manifest.json",
        "model_card.json",
        "params.npz",
    ]
    assert sorted(p.name for p in there.iterdir()) == names
    for name in names:
        assert (there / name).read_bytes() == (here / name).read_bytes(), name
    env = remote_env(api, tmp_path, "study-lead")
    remote = ["--coordinator", api.url, "--ca", str(api.ca)]
    args = ["models", "export", "nope", "--out", str(tmp_path / "x"), *remote]
    missing = runner.invoke(app, args, env=env)
    assert missing.exit_code == 2 and "(HTTP 404)" in missing.output
    assert not (tmp_path / "x").exists()


def test_an_export_archive_cannot_write_outside_the_folder(tmp_path: Path) -> None:
    for evil in ("../escape.json", "/tmp/abs.json", "sub/model_card.json"):
        archive = tmp_path / "evil.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("model_card.json", "{}")
            zf.writestr(evil, "x")
        out = tmp_path / "out"
        with pytest.raises(FedcareError, match="outside the output folder"):
            unpack_export(archive, out)
        assert not out.exists() and not (tmp_path / "escape.json").exists()
    archive.write_bytes(b"not a zip")
    with pytest.raises(FedcareError, match="not a zip archive"):
        unpack_export(archive, tmp_path / "out")


def _job_config(api: Api, job_id: str) -> dict[str, object]:
    return dict(api.store.get_study(job_id).config)


def test_remote_analytics_queues_the_hosts_job_owned_by_the_caller(
    api: Api, tmp_path: Path
) -> None:
    require_mirror()
    args = ["analytics", str(SPEC), "--min-sites", "2", "--dataset", "heart-disease"]
    env = remote_env(api, tmp_path)
    local = runner.invoke(app, [*args, "--federation", str(api.home)], env=env)
    assert local.exit_code == 0, local.output
    lead = remote_env(api, tmp_path, "study-lead")
    remote_args = [*args, "--coordinator", api.url, "--ca", str(api.ca), "--json"]
    remote = runner.invoke(app, remote_args, env=lead)
    assert remote.exit_code == 0, remote.output
    job = json.loads(remote.stdout)
    here, there = api.store.get_study(local.stdout.strip()), api.store.get_study(job["id"])
    assert there.config == here.config and there.config["columns"]  # the dataset's columns
    assert (here.owner, there.owner) == (None, "study-lead-person")
    assert (there.name, there.status) == ("heart-disease-descriptives", "pending")
    assert job["status"] == "pending" and job["result"] is None and job["min_sites"] == 2
    assert set(job) == set(AnalyticsJob.__annotations__)
    local_json = runner.invoke(app, [*args, "--federation", str(api.home), "--json"], env=env)
    shape = json.loads(local_json.stdout)
    assert set(shape) == set(job) and shape["spec"] == job["spec"]
    entries = [json.loads(line) for line in (api.home / "audit.jsonl").read_text().splitlines()]
    (entry,) = [e for e in entries if e["event"] == "analytics-submitted"]
    assert entry["data"]["person"] == "study-lead-person" and entry["data"]["via"] == "api"
    assert entry["data"]["study_id"] == job["id"]

    refused = runner.invoke(app, remote_args, env=remote_env(api, tmp_path, "auditor"))
    assert refused.exit_code == 2, refused.output
    assert "a auditor may not submit analytics jobs (HTTP 403)" in refused.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: heart-disease\nqueries: []\n")
    invalid = runner.invoke(app, ["analytics", str(bad), *remote_args[-5:]], env=lead)
    assert invalid.exit_code == 2 and "queries" in invalid.output and "(HTTP 422)" in invalid.output
    both = runner.invoke(app, [*remote_args, "--federation", str(api.home)], env=lead)
    assert both.exit_code == 2 and "either --coordinator" in both.output
    assert len(api.store.list_studies()) == 3  # the two queued jobs and the --json one


def test_remote_analytics_wait_writes_the_hosts_results(api: Api, tmp_path: Path) -> None:
    spec = tmp_path / "ages.yaml"
    spec.write_text("name: ages\ndataset: registry\nqueries: [{type: count}]\n")
    answer = {
        "name": "ages",
        "sites": ["hungary"],
        "min_cell": {"hungary": 5},
        "queries": [{"name": "count", "type": "count", "count": 42.0, "sites": ["hungary"]}],
    }

    def answer_first_job() -> None:
        while not api.store.list_studies():
            time.sleep(0.05)
        (job,) = api.store.list_studies()
        api.store.set_study_status(job.id, "running")
        empty = encode_arrays(ArrayRecord())
        api.store.record_round(
            job.id, 1, params=empty, state=empty,
            record={"kind": RESULT_KIND, "result": answer}, duration_s=0.1,
        )  # fmt: skip
        api.store.set_study_status(job.id, "completed")

    worker = threading.Thread(target=answer_first_job)
    worker.start()
    there = tmp_path / "there"
    remote = ["--coordinator", api.url, "--ca", str(api.ca)]
    env = remote_env(api, tmp_path, "study-lead")
    waited = runner.invoke(
        app, ["analytics", str(spec), *remote, "--wait", "--timeout", "30", "--out", str(there)],
        env=env,
    )  # fmt: skip
    worker.join()
    assert waited.exit_code == 0, waited.output
    assert (
        "analytics ages" in waited.output and f"results: {there / 'results.json'}" in waited.output
    )
    (job,) = api.store.list_studies()
    here = tmp_path / "here"
    report = runner.invoke(
        app, ["study", "report", job.id, "--home", str(api.home), "--out", str(here)], env=env
    )
    assert report.exit_code == 0, report.output
    assert (there / "results.json").read_bytes() == (here / "results.json").read_bytes()
    assert json.loads((there / "results.json").read_text())["queries"][0]["count"] == 42.0
    assert (there / "report.html").read_text().startswith("<!DOCTYPE html>")

    # a job that ends without a result: the CLI says so (exit 2), as on the host
    failing = tmp_path / "fail.yaml"
    failing.write_text("name: none\ndataset: registry\nqueries: [{type: count}]\n")

    def fail_next() -> None:
        while len(api.store.list_studies()) < 2:
            time.sleep(0.05)
        newest = max(api.store.list_studies(), key=lambda s: s.created_at)
        api.store.set_study_status(newest.id, "failed", "no site answered")

    worker = threading.Thread(target=fail_next)
    worker.start()
    failed = runner.invoke(app, ["analytics", str(failing), *remote, "--wait"], env=env)
    worker.join()
    assert failed.exit_code == 2, failed.output
    assert "has no result (failed: no site answered)" in failed.output
