"""The Python client against the real API (``create_app``) served over real TLS, over rounds
recorded in the store as the coordinator's runner records them (tests/dashboard/rounds.py):
the shapes it reads are the ones the routes answer with (``client_types``), a dropped event
stream is reopened after a real restart of the server, packages are really signed and
verified, reports and models are those of the coordinator's host."""

from __future__ import annotations

import json
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fedcare
from fedcare.cli.main import app
from fedcare.dashboard.client import Client
from fedcare.dashboard.client_config import parse_sse, resolve_settings
from fedcare.dashboard.client_submit import download_name
from fedcare.dashboard.client_types import (
    RoundEntry,
    RoundSite,
    SiteEntry,
    StudyBrief,
    StudyDetail,
    SubmitResult,
)
from fedcare.errors import ApiError, ConfigError
from fedcare.transport.researchers import add_researcher
from tests.packages.distribution import build

from ..deployment.helpers import provision
from .helpers import EXAMPLE, Api, example_config
from .records_helpers import LEAD, register
from .rounds import SITES, play_round, running_study

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_client_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the machine running the tests."""
    for name in ("FEDCARE_COORDINATOR", "FEDCARE_TOKEN", "FEDCARE_CA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FEDCARE_CONFIG", str(tmp_path / "no-config.yaml"))
    (tmp_path / "no-config.yaml").write_text("{}\n")


OPEN: list[Client] = []


@pytest.fixture(autouse=True)
def _close_clients(request: pytest.FixtureRequest) -> Iterator[None]:
    """Close the test's clients before its server stops (an open keep-alive connection holds
    uvicorn's shutdown for its whole grace period)."""
    if "api" in request.fixturenames:
        request.getfixturevalue("api")  # set up first, so torn down after this fixture
    yield
    while OPEN:
        OPEN.pop().close()


def _client(api: Api, role: str = "operator") -> Client:
    client = Client(api.url, token=api.tokens[role], ca=api.ca, timeout_s=10)
    OPEN.append(client)
    return client


# --- settings ------------------------------------------------------------------------------
def test_settings_come_from_arguments_then_environment_then_config_file(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "client.yaml"
    config.parent.mkdir()
    config.write_text("coordinator: https://file:1\ntoken: fc_file.x\nca: ca.pem\n")
    env = {"FEDCARE_CONFIG": str(config)}
    from_file = resolve_settings(environ=env)
    assert from_file.url == "https://file:1/api/v1" and from_file.token == "fc_file.x"
    assert from_file.ca == config.parent / "ca.pem"  # relative to the config file's folder
    env |= {"FEDCARE_COORDINATOR": "https://env:2/api/v1/", "FEDCARE_TOKEN": "fc_env.y",
            "FEDCARE_CA": "/etc/env-ca.pem"}  # fmt: skip
    from_env = resolve_settings(environ=env)
    assert (from_env.url, from_env.token, from_env.ca) == (
        "https://env:2/api/v1",
        "fc_env.y",
        Path("/etc/env-ca.pem"),
    )
    given = resolve_settings("https://arg:3", "fc_arg.z", tmp_path / "a.pem", environ=env)
    assert (given.url, given.token, given.ca) == (
        "https://arg:3/api/v1",
        "fc_arg.z",
        tmp_path / "a.pem",
    )
    assert given.sources == {"coordinator": "argument", "token": "argument", "ca": "argument"}
    assert "fc_arg.z" not in repr(given)


def test_settings_refuse_what_cannot_work(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match=r"no coordinator URL.*FEDCARE_COORDINATOR"):
        resolve_settings(environ={"FEDCARE_CONFIG": str(tmp_path / "empty.yaml")})
    with pytest.raises(ConfigError, match=r"missing\.yaml \(FEDCARE_CONFIG\) does not exist"):
        resolve_settings(environ={"FEDCARE_CONFIG": str(tmp_path / "missing.yaml")})
    with pytest.raises(ConfigError, match="must start with https://"):
        resolve_settings("http://host:8443", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("coordinator: https://h:1\npassword: x\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['password'\]"):
        resolve_settings(environ={"FEDCARE_CONFIG": str(bad)})
    with pytest.raises(ConfigError, match="cannot be read"):
        Client("https://h:1", ca=tmp_path / "missing-ca.pem")


# --- the landed routes -----------------------------------------------------------------------
def test_client_reads_and_cancels_through_the_real_api(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = api.store.create_study("heart", {"rounds": 3}, 7, owner="operator-person")
    monkeypatch.setenv("FEDCARE_TOKEN", api.tokens["operator"])  # the token from the env
    with Client(api.url + "/api/v1", ca=api.ca) as client:
        assert client.health() == {"status": "ok"}
        assert [s["id"] for s in client.studies()] == [sid]
        detail = client.study(sid)
        assert detail["rounds_total"] == 3 and detail["refusals"] == []
        assert client.status(sid)["status"] == "pending" and "rounds" not in client.status(sid)
        assert client.sites() == []
        assert client.cancel(sid)["status"] == "cancelled"
        assert api.tokens["operator"] not in repr(client)
    assert api.store.get_study(sid).status == "cancelled"


def test_refusals_raise_api_error_with_status_and_detail(api: Api) -> None:
    sid = api.store.create_study("heart", {"rounds": 3}, 7)
    bad = Client(api.url, token="fc_0.wrong", ca=api.ca)
    OPEN.append(bad)
    cases: list[tuple[Any, int, str]] = [
        (lambda: bad.studies(), 401, "missing or invalid API token"),
        (lambda: _client(api, "auditor").cancel(sid), 403, "auditor may not cancel"),
        (lambda: _client(api).study("nope"), 404, "no study with id 'nope'"),
    ]
    for call, status, detail in cases:
        with pytest.raises(ApiError) as caught:
            call()
        assert caught.value.status == status and detail in str(caught.value)
        assert "fc_0.wrong" not in str(caught.value)
    _client(api).cancel(sid)
    with pytest.raises(ApiError) as again:
        _client(api).cancel(sid)
    assert again.value.status == 409 and "cancelled" in str(again.value)
    assert isinstance(again.value, fedcare.FedcareError) and fedcare.ApiError is ApiError


def test_an_untrusted_certificate_or_a_closed_port_is_a_clear_error(
    api: Api, tmp_path: Path
) -> None:
    other = provision(tmp_path / "other-fed", sites=("x",), name="other")
    with pytest.raises(ApiError) as caught:
        Client(api.url, token=api.tokens["operator"], ca=other.coordinator / "ca.pem").studies()
    message = str(caught.value)
    assert caught.value.status is None and api.url in message
    assert "CERTIFICATE_VERIFY_FAILED" in message and "not signed by the CA" in message
    with pytest.raises(ApiError, match=r"give the federation's ca\.pem"):
        Client(api.url).health()  # the system's CAs do not know the federation's
    with pytest.raises(ApiError, match=r"cannot connect to https://127\.0\.0\.1:9/api/v1"):
        Client("https://127.0.0.1:9", ca=api.ca, timeout_s=2).health()


# --- server-sent events ----------------------------------------------------------------------
def test_event_stream_parsing() -> None:
    text = (
        ': ping\n\nevent: status\ndata: {"status": "running"}\n\n'
        "event: note\r\ndata: first\r\ndata:second\r\nid: 7\r\nretry: 10\r\n\r\n"
        'data: [1, 2]\n\nevent: empty\n\n: another comment\nevent: round\ndata: {"round"'
    )
    items = list(parse_sse(text.splitlines(keepends=True)))
    assert items == [
        None,
        ("status", {"status": "running"}),
        ("note", "first\nsecond"),  # data lines joined; not JSON: text
        ("message", [1, 2]),  # no event name: 'message'
        None,  # an event without data is dropped; the cut last one too
    ]


def test_wait_reopens_a_dropped_stream_after_the_last_round_it_saw(api: Api) -> None:
    """The coordinator's API restarts while the client follows a study: its stream is cut, the
    reconnections are refused until the server is back, then the stream is reopened with
    ``?after_round=1``: round 1 is not reported again (it would be, without it)."""
    sid = running_study(api.store, rounds=2)
    play_round(api.store, sid, 1)
    seen: list[tuple[str, Any]] = []
    restarts: list[threading.Thread] = []

    def restart() -> None:
        assert api.server is not None
        api.server.stop()  # cuts the open stream (after the server's grace period)
        play_round(api.store, sid, 2)  # the study goes on while the API is down
        api.store.set_study_status(sid, "completed")
        time.sleep(0.3)  # meanwhile the client's reconnections are refused
        api.restart()

    def progress(event: str, data: Any) -> None:
        seen.append((event, data))
        if event == "round" and not restarts:
            restarts.append(threading.Thread(target=restart))
            restarts[0].start()

    client = _client(api)
    final = client.wait(sid, progress=progress, retry_wait_s=0.2, retries=6)
    restarts[0].join()
    assert final["status"] == "completed" and final["rounds_done"] == 2
    names = [e for e, _ in seen]
    # a status first on each connection (and on each change: how many is timing); rounds once
    assert names[:2] == ["status", "round"] and names.count("status") >= 2, names
    assert [n for n in names if n != "status"] == ["round", "round", "end"], names
    assert [d["round"] for e, d in seen if e == "round"] == [1, 2]
    assert [e for e, _ in client.events(sid)] == ["status", "round", "round", "end"]
    assert [e for e, _ in client.events(sid, after_round=1)] == ["status", "round", "end"]


def test_wait_gives_up_after_its_timeout_and_refusals_are_not_retried(api: Api) -> None:
    sid = running_study(api.store, rounds=2)
    client = _client(api)
    started = time.monotonic()
    with pytest.raises(ApiError, match=r"had not ended after 0\.5 s"):
        client.wait(sid, timeout_s=0.5)
    assert time.monotonic() - started < 5
    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        client.wait("nope", retry_wait_s=5)  # a retry would wait 5 s first
    assert caught.value.status == 404 and time.monotonic() - started < 2


# --- the shapes the routes answer with ----------------------------------------------------
def test_the_typed_shapes_are_those_the_routes_answer_with(api: Api) -> None:
    sid = running_study(api.store)
    play_round(api.store, sid, 1)
    api.store.create_tasks(sid, 2, 0, [(s, "fit", None, None) for s in SITES])  # out now
    api.store.register_site("other", "serial-other", datasets={"heart": {}})
    client = _client(api)
    (brief,) = client.studies()
    assert set(brief) == set(StudyBrief.__annotations__)
    detail = client.study(sid[:8])
    assert set(detail) == set(StudyDetail.__annotations__)
    assert detail["refusals"] == [
        "site swiss refused round 1 (fit): policy-denied: the plan's dataset is not allowed"
    ]
    done, running = client.rounds(sid)
    assert set(done) == set(running) == set(RoundEntry.__annotations__)
    assert (done["status"], running["status"]) == ("completed", "running")
    assert done["metrics"]["auroc"] == 0.51 and running["metrics"] == {}
    for entry in (done, running):
        for part in entry["sites"].values():
            assert set(part) == set(RoundSite.__annotations__), part
    assert done["sites"]["hungary"]["metrics"]["auroc"] == 0.51
    assert {s: p["status"] for s, p in done["sites"].items()} == {
        "hungary": "aggregated",
        "swiss": "refused",
        "va": "timed out",
    }
    assert {p["status"] for p in running["sites"].values()} == {"sent"}
    api.store.set_study_status(sid, "cancelled", "cancelled by test")
    assert client.rounds(sid)[1]["status"] == "stopped"  # the study ended before it
    assert all(set(site) == set(SiteEntry.__annotations__) for site in client.sites())


def test_a_refused_study_is_one_line_naming_the_field(api: Api, tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(EXAMPLE.read_text().replace("rounds: 20", "rounds: 0"))
    with pytest.raises(ApiError) as caught:
        _client(api, "study-lead").submit(study, queue=True)
    assert caught.value.status == 422 and "field rounds" in str(caught.value)
    assert "\n" not in str(caught.value) and api.store.list_studies() == []


# --- submit, report, download --------------------------------------------------------------
def _package_study(folder: Path, package: str) -> Path:
    study = folder / "study.yaml"
    model = f"model:\n  kind: package\n  package: {package}\n  options: {{l2: 0.01}}\n"
    study.write_text(EXAMPLE.read_text().replace("model: {kind: logistic}\n", model))
    return study


def test_submit_uploads_a_local_archive_then_names_it_by_hash(api: Api, tmp_path: Path) -> None:
    federation = api.home.parent / "fed"
    add_researcher(federation, "alice")
    built = build(tmp_path / "pkg", federation)  # a signed archive, relative to the study
    study = _package_study(tmp_path, f"pkg/{built.path.name}")
    result = _client(api, "study-lead").submit(study, queue=True)
    assert set(result) == set(SubmitResult.__annotations__)
    assert result["owner"] == "study-lead-person" and result["warnings"]
    stored = api.home / "packages" / f"{built.hash}.fcpkg"
    assert stored.read_bytes() == built.path.read_bytes()  # verified and kept by hash
    model = api.store.get_study(result["id"]).config["model"]
    assert model["package"] == f"sha256:{built.hash}" and model["options"] == {"l2": 0.01}
    assert [s["id"] for s in _client(api).studies()] == [result["id"]]


def test_submit_refuses_a_package_folder_before_sending_anything(api: Api, tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    client = _client(api)
    with pytest.raises(ConfigError, match=r"package folder.*`fedcare package build pkg"):
        client.submit(_package_study(tmp_path, "pkg"))
    with pytest.raises(ConfigError, match="no such file"):
        client.submit(_package_study(tmp_path, "missing.fcpkg"))
    assert not (api.home / "packages").exists()
    with pytest.raises(ApiError) as caught:  # a hash the coordinator never stored
        client.submit(_package_study(tmp_path, "sha256:" + "0" * 64))
    assert caught.value.status == 422 and "is not stored at this coordinator" in str(caught.value)
    assert api.store.list_studies() == []


def test_report_writes_what_the_hosts_report_writes(api: Api, tmp_path: Path) -> None:
    sid = running_study(api.store, owner=LEAD, rounds=2)
    for n in (1, 2):
        play_round(api.store, sid, n)
    api.store.set_study_status(sid, "completed")
    results, page = _client(api, "study-lead").report(sid[:8], tmp_path / "out")
    assert results == tmp_path / "out" / "results.json"
    host = runner.invoke(
        app, ["study", "report", sid, "--out", str(tmp_path / "host"), "--home", str(api.home)]
    )
    assert host.exit_code == 0, host.output
    assert results.read_text() == (tmp_path / "host" / "results.json").read_text()
    generated = re.compile(r"Generated by fedcare \S+ at \S+;")  # the time differs
    assert generated.sub("", page.read_text()) == generated.sub(
        "", (tmp_path / "host" / "report.html").read_text()
    )
    assert json.loads(results.read_text())["study"]["id"] == sid
    theirs = api.store.create_study("theirs", example_config(), 1, owner="someone-else")
    with pytest.raises(ApiError) as caught:
        _client(api, "study-lead").report(theirs, tmp_path / "x")
    assert caught.value.status == 404 and not (tmp_path / "x").exists()


def test_download_model_saves_the_zip_of_models_export(api: Api, tmp_path: Path) -> None:
    _, version = register(api.store, "first", LEAD)
    client = _client(api, "study-lead")
    saved = client.download_model(version, tmp_path)
    assert saved == tmp_path / f"model-{version}.zip"
    named = client.download_model(version, tmp_path / "mine.zip")
    assert named.read_bytes() == saved.read_bytes()
    with zipfile.ZipFile(saved) as archive:
        assert archive.namelist() == [
            "model_card.json",
            "lineage.json",
            "params.npz",
            "bundle.json",
            "manifest.json",
        ]
        card = json.loads(archive.read("model_card.json"))
    assert card == api.store.get_model(version).card
    with pytest.raises(ApiError) as caught:
        client.download_model("m-nope", tmp_path)
    assert caught.value.status == 404 and "m-nope" in str(caught.value)


def test_a_downloads_file_name_never_leaves_the_folder() -> None:
    evil = {"content-disposition": 'attachment; filename="../../evil/model-v1.zip"'}
    assert download_name(evil, "v1") == "model-v1.zip"
    assert download_name({"content-disposition": "attachment; filename=.."}, "a/b") == (
        "model-a_b.zip"
    )
    quoted = {"content-disposition": "attachment; filename*=UTF-8''model%20x.zip"}
    assert download_name(quoted, "x") == "model x.zip"
