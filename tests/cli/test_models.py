"""``fedcare models list|show|export`` over a coordinator's registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.coordinator.server import default_db_url
from fedcare.coordinator.store import CoordinatorStore

from ..dashboard.records_helpers import register

runner = CliRunner(env={"COLUMNS": "240"})


def _home(tmp_path: Path) -> tuple[Path, str, str]:
    home = tmp_path / "home"
    home.mkdir()
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        _, first = register(store, "first", None)
        _, second = register(store, "second", None, parent=first)
    return home, first, second


def test_list_show_and_export(tmp_path: Path) -> None:
    home, first, second = _home(tmp_path)
    listed = runner.invoke(app, ["models", "list", "--home", str(home)])
    assert listed.exit_code == 0, listed.output
    assert first in listed.output and second in listed.output

    shown = runner.invoke(app, ["models", "show", second, "--home", str(home)])
    assert shown.exit_code == 0, shown.output
    assert f"lineage: {second} <- {first}" in shown.output
    as_json = runner.invoke(app, ["models", "show", second, "--json", "--home", str(home)])
    assert json.loads(as_json.stdout)["model"]["parent"] == first

    out = tmp_path / "export"
    done = runner.invoke(app, ["models", "export", second, "--out", str(out), "--home", str(home)])
    assert done.exit_code == 0, done.output
    card = json.loads((out / "model_card.json").read_text())
    assert sorted(card["sites"]) == ["hungary"] and card["not_participating"] == {
        "va": "timeout: too slow"
    }
    with np.load(out / "params.npz") as params:
        assert np.array_equal(params["w"], np.arange(3.0) + len("second"))
        assert np.array_equal(params["layer/b"], np.ones(1))
    lineage = json.loads((out / "lineage.json").read_text())
    assert [m["version"] for m in lineage] == [second, first]


def test_an_unknown_version_fails_naming_it(tmp_path: Path) -> None:
    home, _, _ = _home(tmp_path)
    for command in (["show", "m-nope"], ["export", "m-nope", "--out", str(tmp_path / "x")]):
        result = runner.invoke(app, ["models", *command, "--home", str(home)])
        assert result.exit_code == 2
        assert "m-nope" in result.output
