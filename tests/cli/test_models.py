"""``fedcare models list|show|export`` over a coordinator's registry."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.coordinator.server import default_db_url
from fedcare.coordinator.store import CoordinatorStore
from fedcare.evaluation.model_card import build_model_card
from fedcare.records.arrays import ArrayRecord
from fedcare.transport.codec import encode_arrays

runner = CliRunner(env={"COLUMNS": "240"})
HISTORY = [
    {
        "round": 1,
        "fit": {
            "sampled_sites": ["a", "b"],
            "failed_sites": {"b": "timeout: too slow"},
            "site_info": {"a": {"dataset_fingerprint": "sha256:" + "1" * 64, "num_rows": "12"}},
        },
    }
]


def _register(store: CoordinatorStore, name: str, parent: str | None, shift: float) -> str:
    study_id = store.create_study(name, {"name": name}, seed=1)
    store.set_study_status(study_id, "running")
    params = ArrayRecord({"w": np.arange(3.0) + shift, "layer/b": np.ones(1)})
    card = build_model_card(
        study={"name": name},
        study_id=study_id,
        plan={},
        history=HISTORY,
        final=None,
        params=params,
        created=datetime.now(timezone.utc),
        fedcare_version="test",
        parent=parent,
    )
    model = store.register_model(
        study_id,
        1,
        params=encode_arrays(params),
        model_hash=card["model"]["hash"],
        card=card,
        parent=parent,
    )
    return model.version


def _home(tmp_path: Path) -> tuple[Path, str, str]:
    home = tmp_path / "home"
    home.mkdir()
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        first = _register(store, "first", None, 0.0)
        second = _register(store, "second", first, 1.0)
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
    assert sorted(card["sites"]) == ["a"] and card["not_participating"] == {
        "b": "timeout: too slow"
    }
    with np.load(out / "params.npz") as params:
        assert np.array_equal(params["w"], np.arange(3.0) + 1.0)
        assert np.array_equal(params["layer/b"], np.ones(1))
    lineage = json.loads((out / "lineage.json").read_text())
    assert [m["version"] for m in lineage] == [second, first]


def test_an_unknown_version_fails_naming_it(tmp_path: Path) -> None:
    home, _, _ = _home(tmp_path)
    for command in (["show", "m-nope"], ["export", "m-nope", "--out", str(tmp_path / "x")]):
        result = runner.invoke(app, ["models", *command, "--home", str(home)])
        assert result.exit_code == 2
        assert "m-nope" in result.output
