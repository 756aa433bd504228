"""The study commands and ``fedcare sites`` from a desk (``--coordinator``): against the real
API served over real TLS they print what the same commands print on the coordinator's host;
``--json`` prints the API's shapes in both modes; ``fedcare study wait``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.coordinator.store_ledger import PrivacySpend
from fedcare.privacy.accounting.analysis import DpEvent

from ..dashboard.helpers import EXAMPLE, Api, example_config
from ..dashboard.rounds import play_round, register_sites, running_study
from .remote_helpers import remote_env

runner = CliRunner()


def _remote(url: str, api: Api) -> list[str]:
    return ["--coordinator", url, "--ca", str(api.ca)]


def _studies(api: Api) -> tuple[str, str]:
    """A running study as a coordinator records one: its start (round 0: a site refused for
    its schema) and a round where swiss refused, va never answered and hungary spent epsilon;
    a waiting reason. And a pending study."""
    store = api.store
    running = running_study(store)
    start = {"round": 0, "kind": "start", "refused_sites": {"cleveland": "its columns differ"}}
    store.record_round(running, 0, params=b"p", state=b"s", record=start, duration_s=0.0)
    spend = PrivacySpend("hungary", "heart", (DpEvent(1.2).to_dict(),))
    play_round(store, running, 1, privacy=[spend])
    store.note_study(running, "waiting: awaiting approval at va")
    pending = store.create_study("eicu", example_config(name="eicu", rounds=5), 1)
    return running, pending


def test_remote_status_prints_the_same_lines_as_on_the_host(api: Api, tmp_path: Path) -> None:
    running, _ = _studies(api)
    env = remote_env(api, tmp_path)
    for args in (["study", "status"], ["study", "status", running]):
        local = runner.invoke(app, [*args, "--home", str(api.home)], env=env)
        remote = runner.invoke(app, [*args, *_remote(api.url, api)], env=env)
        assert local.exit_code == 0 and remote.exit_code == 0, (local.output, remote.output)
        assert remote.stdout == local.stdout
    assert "site hungary: epsilon spent on this dataset" in remote.stdout
    assert "  waiting: awaiting approval at va" in remote.stdout
    assert "rounds done: 1/3" in remote.stdout
    assert "site cleveland refused for this study: its columns differ" in remote.stdout
    assert "site swiss refused round 1 (fit): policy-denied" in remote.stdout


def test_remote_sites_print_the_hosts_table(api: Api, tmp_path: Path) -> None:
    api.store.register_site("hungary", "1f", version="0.1.0", datasets={"heart": {}, "a": {}})
    api.store.register_site("va", "2f")
    api.store.touch_site("hungary")
    env = remote_env(api, tmp_path)
    local = runner.invoke(app, ["sites", "--home", str(api.home)], env=env)
    remote = runner.invoke(app, ["sites", *_remote(api.url, api)], env=env)
    assert local.exit_code == 0 and remote.exit_code == 0, (local.output, remote.output)
    # the host's first line says whether its coordinator runs: the API does not tell (yet)
    assert local.stdout.startswith("coordinator: ")
    assert remote.stdout == local.stdout.split("\n", 1)[1]
    assert "connected" in remote.stdout and "a, heart" in remote.stdout


def test_json_is_the_apis_shape_in_both_modes(api: Api, tmp_path: Path) -> None:
    running, pending = _studies(api)
    api.store.touch_site("hungary", version="0.1.0", datasets={"heart": {}})
    env = remote_env(api, tmp_path)
    for args in (["study", "status"], ["study", "status", running], ["sites"]):
        local = runner.invoke(app, [*args, "--json", "--home", str(api.home)], env=env)
        remote = runner.invoke(app, [*args, "--json", *_remote(api.url, api)], env=env)
        assert local.exit_code == 0 and remote.exit_code == 0, (local.output, remote.output)
        assert json.loads(local.stdout) == json.loads(remote.stdout)
        if args[-1] == running:
            detail = json.loads(remote.stdout)
    assert [r["round"] for r in detail["rounds"]] == [0, 1]
    assert detail["refusals"] == [
        "site cleveland refused for this study: its columns differ",
        "site swiss refused round 1 (fit): policy-denied: the plan's dataset is not allowed",
    ]
    assert detail["last_round_sites"]["va"] == {
        "status": "failed",
        "reason": "no reply before the deadline",
    }
    assert list(detail["epsilon_spent"]) == ["hungary"] and detail["epsilon_spent"]["hungary"] > 0
    hungary = next(s for s in json.loads(remote.stdout) if s["id"] == "hungary")
    assert hungary["datasets"] == ["heart"] and hungary["version"] == "0.1.0"
    cancel = runner.invoke(
        app, ["study", "cancel", pending, "--json", *_remote(api.url, api)], env=env
    )
    assert cancel.exit_code == 0 and json.loads(cancel.stdout)["status"] == "cancelled"


def test_the_token_is_never_an_option_nor_printed(api: Api, tmp_path: Path) -> None:
    env = remote_env(api, tmp_path)
    token = api.tokens["operator"]
    as_option = runner.invoke(app, ["study", "status", "--token", token, *_remote(api.url, api)])
    assert as_option.exit_code == 2 and "No such option" in as_option.output
    for args in (["study", "status", "nope"], ["study", "cancel", "nope"], ["sites"]):
        result = runner.invoke(app, [*args, *_remote(api.url, api)], env=env)
        assert token not in result.output
    missing = runner.invoke(app, ["study", "status", "nope", *_remote(api.url, api)], env=env)
    assert missing.exit_code == 2 and "no study with id 'nope' (HTTP 404)" in missing.output
    bad = runner.invoke(
        app, ["sites", *_remote(api.url, api)], env={**env, "FEDCARE_TOKEN": "fc_0.wrong"}
    )
    assert bad.exit_code == 2 and "(HTTP 401)" in bad.output and "fc_0.wrong" not in bad.output
    none = runner.invoke(app, ["sites", *_remote(api.url, api)], env={**env, "FEDCARE_TOKEN": None})
    assert none.exit_code == 2 and "no token was given: set FEDCARE_TOKEN" in none.output


def test_remote_or_local_is_predictable(api: Api, tmp_path: Path) -> None:
    env = remote_env(api, tmp_path)
    both = runner.invoke(
        app, ["study", "status", "--home", str(api.home), *_remote(api.url, api)], env=env
    )
    assert both.exit_code == 2 and "either --coordinator" in both.output
    # FEDCARE_COORDINATOR selects the API, unless --home is given on the command line
    env_remote = {**env, "FEDCARE_COORDINATOR": "https://127.0.0.1:9", "FEDCARE_CA": str(api.ca)}
    here = runner.invoke(app, ["study", "status", "--home", str(api.home)], env=env_remote)
    assert here.exit_code == 0, here.output
    away = runner.invoke(app, ["study", "status"], env=env_remote)
    assert away.exit_code == 2 and "cannot connect to https://127.0.0.1:9/api/v1" in away.output
    untrusted = runner.invoke(app, ["sites", "--coordinator", api.url], env=env)
    assert untrusted.exit_code == 2 and "TLS to" in untrusted.output


def test_remote_submit_report_and_wait(api: Api, tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(EXAMPLE.read_text().replace("rounds: 20", "rounds: 2"))
    register_sites(api.store)
    env = remote_env(api, tmp_path)
    remote = _remote(api.url, api)
    submitted = runner.invoke(app, ["study", "submit", str(study), *remote, "--queue"], env=env)
    assert submitted.exit_code == 0, submitted.output
    assert "warning: queued anyway (--queue)" in submitted.stderr
    sid = submitted.stdout.strip()
    api.store.set_study_status(sid, "running")

    def run_rounds() -> None:
        time.sleep(0.3)
        for n in (1, 2):
            play_round(api.store, sid, n, silent=None if n == 1 else "va")
        api.store.set_study_status(sid, "completed")

    worker = threading.Thread(target=run_rounds)
    worker.start()
    waited = runner.invoke(app, ["study", "wait", sid, *remote], env=env)
    worker.join()
    assert waited.exit_code == 0, waited.output
    assert waited.stdout.splitlines() == [
        "round 1/2 completed: auroc 0.51, accuracy 0.41 (sites: 2 aggregated, 1 refused)",
        "round 2/2 completed: auroc 0.52, accuracy 0.42 (sites: 1 aggregated, 1 refused, "
        "1 timed out)",
        f"study {sid} completed",
    ]
    # the study has ended: the same lines and events on the coordinator's host
    host = ["--home", str(api.home), "--poll", "0.05"]
    for flags in ([], ["--json"]):
        here = runner.invoke(app, ["study", "wait", sid, *host, *flags], env=env)
        away = runner.invoke(app, ["study", "wait", sid, *remote, *flags], env=env)
        assert here.exit_code == away.exit_code == 0, (here.output, away.output)
        assert here.stdout == away.stdout
    events = [json.loads(line) for line in away.stdout.splitlines()]
    assert [e["event"] for e in events] == ["status", "round", "round", "end"]
    assert events[2]["data"]["sites"]["va"]["status"] == "timed out"
    out = tmp_path / "report"
    report = runner.invoke(
        app, ["study", "report", sid, "--out", str(out), "--json", *remote], env=env
    )
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout) == {
        "results": str(out / "results.json"),
        "report": str(out / "report.html"),
    }
    assert json.loads((out / "results.json").read_text())["study"]["id"] == sid


def test_wait_on_the_host_polls_the_home(api: Api, tmp_path: Path) -> None:
    running, pending = _studies(api)
    api.store.set_study_status(running, "completed")
    api.store.set_study_status(pending, "cancelled", "cancelled by the operator")
    home = ["--home", str(api.home), "--poll", "0.05"]
    done = runner.invoke(app, ["study", "wait", running, *home])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == [
        "start (round 0) completed (sites: 1 refused)",
        "round 1/3 completed: auroc 0.51, accuracy 0.41 (sites: 1 aggregated, 1 refused, "
        "1 timed out)",
        f"study {running} completed",
    ]
    cancelled = runner.invoke(app, ["study", "wait", pending[:8], *home, "--json"])
    assert cancelled.exit_code == 1
    events: list[dict[str, Any]] = [json.loads(line) for line in cancelled.stdout.splitlines()]
    assert [e["event"] for e in events] == ["status", "end"]
    assert events[-1]["data"]["reason"] == "cancelled by the operator"
