"""``fedcare study submit`` refuses a study that could not run, at once, with a one-line reason.

Unknown model kinds, bad model options, unknown strategies, a mode ``private`` without its DP
settings or whose first round already overspends its ``privacy.epsilon``, and ``init_model``
values that are not a registered model of the study's kind and shape used to be queued and
fail later at the coordinator; now each exits 2 naming the problem, and nothing is stored.
So are (issue 11 item 2) a HOME that is not a coordinator home (nothing is created there), a
dataset fewer than ``min_sites`` sites offer (with the closest name), and a coordinator that is
not running (its liveness row is missing, stopped or stale, or its address refuses); with
``--queue`` the last two only warn. :mod:`tests.deployment.test_submit_checks` does the same
against a real coordinator.
"""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.coordinator.server import default_db_url
from fedcare.coordinator.store import CoordinatorStore
from fedcare.evaluation.model_card import build_model_card
from fedcare.models.registry import build_model
from fedcare.transport.codec import encode_arrays

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "heart-disease.yaml"
runner = CliRunner(env={"COLUMNS": "400"})


def _register(store: CoordinatorStore, kind: str, width: int) -> str:
    """A registered model of ``kind`` trained on ``width`` features."""
    config = {"name": f"{kind}-{width}", "model": {"kind": kind}}
    study_id = store.create_study(config["name"], config, seed=1)
    params = build_model({"kind": kind}).init_params((width,), np.random.default_rng(0))
    card = build_model_card(
        study=config,
        study_id=study_id,
        plan={},
        history=[],
        final=None,
        params=params,
        created=datetime.now(timezone.utc),
        fedcare_version="test",
    )
    encoded = encode_arrays(params)
    model = store.register_model(
        study_id, 1, params=encoded, model_hash=card["model"]["hash"], card=card
    )
    return model.version


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A coordinator home with three registered models and a site that described its data."""
    home = tmp_path / "home"
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        versions = {
            "logistic-13": _register(store, "logistic", 13),
            "logistic-10": _register(store, "logistic", 10),
            "cox-13": _register(store, "cox", 13),
        }
        store.register_site("cleveland", "1f")
        store.touch_site("cleveland", datasets={"heart-disease": {"input_shape": [13]}})
    return home, versions


def _submit(tmp_path: Path, home: Path, *options: str, **changes: Any) -> tuple[int, str, int]:
    """(exit code, output, number of studies stored afterwards)."""
    study = {**yaml.safe_load(EXAMPLE.read_text()), **changes}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    out = runner.invoke(app, ["study", "submit", str(path), "--home", str(home), *options])
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        count = len(store.list_studies())
    return out.exit_code, out.output, count


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"model": {"kind": "nonsense"}}, "model spec has unknown kind 'nonsense'; valid kinds:"),
        ({"model": {"kind": "logistic", "bogus": 1}}, "unknown option(s) ['bogus']"),
        ({"strategy": {"name": "fedmagic"}}, "unknown strategy 'fedmagic'"),
        (
            {
                "strategy": {"name": "fedbuff", "options": {"buffer_size": 2}},
                "privacy": {"mode": "secure"},
            },
            "strategy 'fedbuff' cannot run in privacy mode 'secure': secure aggregation's",
        ),
        ({"privacy": {"mode": "private"}}, "missing field privacy.dp"),
        (
            {
                "privacy": {
                    "mode": "private",
                    "epsilon": 3.0,
                    "dp": {"noise_multiplier": 1.0, "clip_norm": 0.1},
                }
            },
            "round 1 would bring epsilon to 4.73 (privacy.epsilon 3; spent 0 in 0 rounds",
        ),
        (
            {"init_model": "models/final.npz"},
            "init_model 'models/final.npz' is not a registered model version (registered: ",
        ),
    ],
)
def test_submit_refuses_a_study_that_cannot_run(
    tmp_path: Path, home: tuple[Path, dict[str, str]], changes: dict[str, Any], reason: str
) -> None:
    folder, _ = home
    code, output, stored = _submit(tmp_path, folder, **changes)
    assert code == 2, output
    assert reason in output, output
    assert len(output.strip().splitlines()) == 1, output
    assert stored == 3  # only the studies that registered the models


def test_submit_queues_a_fedbuff_study_in_mode_open(
    tmp_path: Path, home: tuple[Path, dict[str, str]]
) -> None:
    """FedBuff runs on the coordinator (tests/deployment/test_fedbuff_study.py): submitted."""
    folder, _ = home
    strategy = {"name": "fedbuff", "options": {"buffer_size": 2, "concurrency": 3}}
    code, output, stored = _submit(tmp_path, folder, "--queue", strategy=strategy)
    assert code == 0, output
    assert stored == 4


def test_submit_checks_init_model_kind_and_shape(
    tmp_path: Path, home: tuple[Path, dict[str, str]]
) -> None:
    folder, versions = home
    code, output, stored = _submit(tmp_path, folder, init_model=versions["cox-13"])
    assert code == 2 and f"init_model {versions['cox-13']!r} is a 'cox' model" in output, output
    code, output, stored = _submit(tmp_path, folder, init_model=versions["logistic-10"])
    assert code == 2, output
    assert "array 'weight' has shape (10,), expected (13,)" in output, output
    assert "(input shape (13,)) does not fit the registered model" in output, output
    assert stored == 3
    # one site offers the data and no coordinator runs: --queue queues it all the same
    code, output, stored = _submit(tmp_path, folder, "--queue", init_model=versions["logistic-13"])
    assert code == 0, output
    assert stored == 4


# --- issue 11 item 2: HOME, the sites' datasets, the coordinator's liveness ------------------
def _one_line_refusal(output: str, *parts: str) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for part in parts:
        assert part in lines[0], output
    assert "Traceback" not in output and "sqlalchemy" not in output.lower(), output


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("made", [False, True], ids=["missing", "empty"])
def test_a_home_that_is_not_a_coordinator_home_is_refused_and_left_alone(
    tmp_path: Path, made: bool
) -> None:
    home = tmp_path / "coord"
    if made:
        home.mkdir()
    args = ["study", "submit", str(EXAMPLE), "--home", str(home), "--queue"]
    out = runner.invoke(app, args, env={"COLUMNS": "80"})  # one line at any width
    assert out.exit_code == 2
    what = "no fedcare database (coordinator.db) in it" if made else "the folder does not exist"
    _one_line_refusal(
        out.output,
        f"{home} is not a coordinator home: {what}",
        f"start the coordinator with `fedcare coordinator start --kit KIT --home {home}` first",
    )
    for command in (["study", "status"], ["study", "cancel", "abc"], ["sites"], ["models", "list"]):
        other = runner.invoke(app, [*command, "--home", str(home)])
        assert other.exit_code == 2, (command, other.output)
        _one_line_refusal(other.output, f"{home} is not a coordinator home")
    assert home.exists() == made and (not made or _files(home) == [])


def test_a_database_without_the_coordinators_schema_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "coord"
    home.mkdir()
    (home / "coordinator.db").touch()  # an empty file, not a migrated database
    out = runner.invoke(app, ["study", "submit", str(EXAMPLE), "--home", str(home)])
    assert out.exit_code == 2
    _one_line_refusal(
        out.output,
        f"{home} is not a coordinator home: database sqlite:///",
        "holds no fedcare coordinator schema (no migration applied)",
    )
    missing = tmp_path / "other.db"
    url = f"sqlite:///{missing}"
    out = runner.invoke(app, ["study", "status", "--home", str(home), "--db", url])
    assert out.exit_code == 2
    _one_line_refusal(out.output, f"database file {missing} does not exist", f"--db {url}` first")
    assert not missing.exists() and _files(home) == ["coordinator.db"]


@pytest.fixture
def federation_home(tmp_path: Path) -> Path:
    """A coordinator home (migrated) where cleveland and hungary offer heart-disease and the
    coordinator never ran."""
    home = tmp_path / "coord"
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        for site in ("cleveland", "hungary"):
            store.register_site(site, f"serial-{site}")
            store.touch_site(site, datasets={"heart-disease": {"input_shape": [13]}})
    return home


def test_a_misspelled_dataset_is_refused_with_the_closest_offered_name(
    tmp_path: Path, federation_home: Path
) -> None:
    code, output, stored = _submit(tmp_path, federation_home, dataset={"name": "heart-disaese"})
    assert code == 2 and stored == 0
    _one_line_refusal(
        output,
        "dataset 'heart-disaese' is offered by 0 of the 2 sites the study needs (min_sites); "
        "sites offer: heart-disease (cleveland, hungary); did you mean 'heart-disease'?; "
        "or pass --queue to queue it until such sites connect",
    )
    code, output, stored = _submit(tmp_path, federation_home, min_sites=3)
    assert code == 2 and stored == 0
    assert "offered by 2 of the 3 sites the study needs (min_sites): cleveland, hungary" in output
    code, output, stored = _submit(
        tmp_path, federation_home, "--queue", dataset={"name": "heart-disaese"}
    )
    assert code == 0 and stored == 1, output
    assert "warning: queued anyway (--queue): dataset 'heart-disaese' is offered by 0" in output


def test_a_submission_while_no_coordinator_runs_is_refused_unless_queued(
    tmp_path: Path, federation_home: Path
) -> None:
    code, output, stored = _submit(tmp_path, federation_home)
    assert code == 2 and stored == 0
    _one_line_refusal(
        output,
        f"the coordinator for {federation_home} is not running (it never started on this "
        f"database); start it with `fedcare coordinator start --kit KIT --home {federation_home}`"
        ", or pass --queue to queue the study anyway",
    )
    code, output, stored = _submit(tmp_path, federation_home, "--queue")
    assert code == 0 and stored == 1, output
    assert f"queued anyway (--queue): the coordinator for {federation_home} is not" in output


def _said_alive(home: Path, *, ago_s: float, listen: str) -> None:
    """A liveness row written ``ago_s`` seconds ago by a coordinator of this host."""
    then = datetime.now(timezone.utc) - timedelta(seconds=ago_s)
    with CoordinatorStore(default_db_url(home), home / "artifacts", clock=lambda: then) as store:
        store.coordinator_started(listen=listen, host=socket.gethostname(), pid=4242, beat_s=5.0)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_coordinator_that_died_is_not_running_whatever_its_row_says(
    tmp_path: Path, federation_home: Path
) -> None:
    listen = f"127.0.0.1:{_closed_port()}"
    _said_alive(federation_home, ago_s=60, listen=listen)  # stale: 3 beats of 5 s have passed
    code, output, stored = _submit(tmp_path, federation_home)
    assert code == 2 and stored == 0
    assert f"the coordinator for {federation_home} is not running (last seen " in output
    assert " s ago, pid 4242 on " in output and "it did not stop cleanly" in output
    _said_alive(federation_home, ago_s=1, listen=listen)  # fresh, but nothing listens there
    code, output, stored = _submit(tmp_path, federation_home)
    assert code == 2 and stored == 0
    assert f"ago, but {listen} refuses connections" in output, output
    with socket.socket() as server:  # something listens: the coordinator is taken as running
        server.bind(("127.0.0.1", 0))
        server.listen()
        _said_alive(federation_home, ago_s=1, listen=f"127.0.0.1:{server.getsockname()[1]}")
        code, output, stored = _submit(tmp_path, federation_home)
    assert code == 0 and stored == 1, output
    assert "warning" not in output
