"""The Python client against the real API served over real TLS (and, for the routes not merged
yet, against tests/dashboard/contract_app.py: the contract's routes over the same store)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fedcare
from fedcare.dashboard.client import Client
from fedcare.dashboard.client_config import parse_sse, resolve_settings
from fedcare.errors import ApiError, ConfigError

from ..deployment.helpers import provision
from .contract_app import serve_contract
from .helpers import Api

RECORD = {"round": 1, "fit": {"sampled_sites": ["hungary"], "site_info": {"hungary": {}}},
          "evaluate": {"weighted": {"auc": 0.75}}}  # fmt: skip


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


def _client(api: Api, role: str = "operator", url: str | None = None) -> Client:
    client = Client(url or api.url, token=api.tokens[role], ca=api.ca, timeout_s=10)
    OPEN.append(client)
    return client


def _record(api: Api, sid: str, round: int) -> None:
    record = {**RECORD, "round": round}
    api.store.record_round(sid, round, params=b"p", state=b"s", record=record, duration_s=0.1)


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


def test_wait_follows_the_events_and_reconnects_after_a_drop(api: Api) -> None:
    sid = api.store.create_study("heart", {"rounds": 2}, 7)
    api.store.set_study_status(sid, "running")

    def run_rounds() -> None:
        time.sleep(0.3)
        _record(api, sid, 1)
        time.sleep(0.3)
        _record(api, sid, 2)
        api.store.set_study_status(sid, "completed")

    seen: list[tuple[str, Any]] = []
    with serve_contract(api) as contract:
        contract.cut_connections = {1}  # the first stream drops right after its first round
        worker = threading.Thread(target=run_rounds)
        worker.start()
        with _client(api, url=contract.url) as client:  # closed: the server stops at once
            final = client.wait(sid, progress=lambda e, d: seen.append((e, d)), retry_wait_s=0.05)
            worker.join()
            assert contract.after_rounds == [None, 1]  # reopened after the round it had seen
            events = client.events(sid)
            assert [e for e, _ in events] == ["status", "round", "round", "end"]
            assert client.rounds(sid)[1]["metrics"] == {"auc": 0.75}
    assert final["status"] == "completed" and final["rounds_done"] == 2
    names = [e for e, _ in seen]
    # a status first on each connection and on each change (how many: timing); rounds once
    assert names[:2] == ["status", "round"] and names.count("status") >= 2, names
    assert [n for n in names if n != "status"] == ["round", "round", "end"], names
    assert [d["round"] for e, d in seen if e == "round"] == [1, 2]  # each round once


def test_wait_gives_up_after_its_timeout_and_refusals_are_not_retried(api: Api) -> None:
    sid = api.store.create_study("heart", {"rounds": 2}, 7)
    with serve_contract(api) as contract:
        with _client(api, url=contract.url) as client:
            started = time.monotonic()
            with pytest.raises(ApiError, match=r"had not ended after 0\.5 s"):
                client.wait(sid, timeout_s=0.5)
            assert time.monotonic() - started < 5
            with pytest.raises(ApiError) as caught:
                client.wait("nope")
        assert caught.value.status == 404 and contract.after_rounds == [None]


# --- submit and report -----------------------------------------------------------------------
def _package_study(folder: Path, package: str) -> Path:
    study = folder / "study.yaml"
    study.write_text(
        "name: packaged\nrounds: 2\n# a comment\n"
        f"model:\n  kind: package\n  package: {package}\n  options: {{width: 4}}\n"
    )
    return study


def test_submit_uploads_a_local_archive_then_names_it_by_hash(api: Api, tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "model.fcpkg").write_bytes(b"PK\x03\x04 signed archive bytes")
    study = _package_study(tmp_path, "pkg/model.fcpkg")  # relative to the study file
    with serve_contract(api) as contract:
        with _client(api, "study-lead", contract.url) as client:
            result = client.submit(study, queue=True)
        assert contract.uploads == [b"PK\x03\x04 signed archive bytes"]
        (sent,) = contract.submitted
    assert sent["queue"] is True and "package: sha256:" in sent["study"]
    assert "pkg/model.fcpkg" not in sent["study"] and "width: 4" in sent["study"]
    assert result["owner"] == "study-lead-person" and result["warnings"]
    assert [s["id"] for s in _client(api).studies()] == [result["id"]]  # the real API sees it


def test_submit_refuses_a_package_folder_before_sending_anything(api: Api, tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    study = _package_study(tmp_path, "pkg")
    with serve_contract(api) as contract:
        with _client(api, url=contract.url) as client:
            with pytest.raises(ConfigError, match=r"package folder.*`fedcare package build pkg"):
                client.submit(study)
            with pytest.raises(ConfigError, match="no such file"):
                client.submit(_package_study(tmp_path, "missing.fcpkg"))
            with pytest.raises(ApiError) as caught:  # a hash the coordinator never stored
                client.submit(_package_study(tmp_path, "sha256:" + "0" * 64))
        assert caught.value.status == 422 and "not stored" in str(caught.value)
        assert contract.uploads == [] and len(contract.submitted) == 1


def test_report_writes_results_and_the_page(api: Api, tmp_path: Path) -> None:
    sid = api.store.create_study("heart", {"rounds": 2}, 7)
    with serve_contract(api) as contract, _client(api, url=contract.url) as client:
        results, page = client.report(sid, tmp_path / "out")
    assert results == tmp_path / "out" / "results.json"
    assert '"status": "pending"' in results.read_text() and "<h1>heart</h1>" in page.read_text()


def test_download_model_keeps_the_servers_file_name_without_its_folders(
    api: Api, tmp_path: Path
) -> None:
    with serve_contract(api) as contract, _client(api, url=contract.url) as client:
        saved = client.download_model("v1", tmp_path)
        named = client.download_model("v1", tmp_path / "mine.npz")
        with pytest.raises(ApiError) as caught:
            client.download_model("v9", tmp_path)
    assert saved == tmp_path / "model-v1.npz" and saved.read_bytes() == b"model bytes"
    assert named.read_bytes() == b"model bytes" and caught.value.status == 404
    assert not (tmp_path.parent / "evil").exists()
