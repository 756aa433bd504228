"""``fedcare study submit`` refuses a study that could not run, at once, with a one-line reason.

Unknown model kinds, bad model options, unknown strategies, a mode ``private`` without its DP
settings or whose first round already overspends its ``privacy.epsilon``, and ``init_model``
values that are not a registered model of the study's kind and shape used to be queued and
fail later at the coordinator; now each exits 2 naming the problem, and nothing is stored.
"""

from __future__ import annotations

from datetime import datetime, timezone
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


def _submit(tmp_path: Path, home: Path, **changes: Any) -> tuple[int, str, int]:
    """(exit code, output, number of studies stored afterwards)."""
    study = {**yaml.safe_load(EXAMPLE.read_text()), **changes}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    out = runner.invoke(app, ["study", "submit", str(path), "--home", str(home)])
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        count = len(store.list_studies())
    return out.exit_code, out.output, count


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"model": {"kind": "nonsense"}}, "model spec has unknown kind 'nonsense'; valid kinds:"),
        ({"model": {"kind": "logistic", "bogus": 1}}, "unknown option(s) ['bogus']"),
        ({"strategy": {"name": "fedmagic"}}, "unknown strategy 'fedmagic'"),
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
    code, output, stored = _submit(tmp_path, folder, init_model=versions["logistic-13"])
    assert code == 0, output
    assert stored == 4
