"""``fedcare models export`` writes a bundle from what the coordinator keeps of a study: the
reference feature schema (round 0's record), the global statistics every task carried (the
model round's checkpoint), the study's model spec and threshold; ``site predict`` runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.coordinator.checkpoint import encode_checkpoint
from fedcare.coordinator.engine import default_db_url
from fedcare.coordinator.provenance import register_final_model
from fedcare.coordinator.store import CoordinatorStore
from fedcare.data.schema_check import feature_schema
from fedcare.inference.bundle import load_bundle
from fedcare.records.arrays import ArrayRecord
from fedcare.strategy.driver import study_strategy
from fedcare.transport.codec import encode_arrays

from ..dashboard.records_helpers import register
from .conftest import Trained

runner = CliRunner(env={"COLUMNS": "240"})


def _home(trained: Trained, tmp_path: Path) -> tuple[Path, str]:
    """A coordinator home whose study ran (rounds 0 and 1 recorded, as the runner records
    them) with the trained model's parameters and statistics, its final model registered."""
    home = tmp_path / "home"
    home.mkdir()
    config = {**trained.study.model_dump(mode="json"), "validation": {"threshold": 0.4}}
    study = type(trained.study).from_dict(config)
    strategy = study_strategy(study, 2)
    model = trained.result.model
    arrays = {"preprocess": ArrayRecord(dict(model.arrays["preprocess"]))}
    schema = feature_schema([13], "float64", trained.data.feature_names)
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        study_id = store.create_study(study.name, config, 0)
        store.set_study_status(study_id, "running")
        for round, params in (
            (0, ArrayRecord({k: np.zeros_like(v) for k, v in model.params.items()})),
            (1, model.params),
        ):
            store.record_round(
                study_id,
                round,
                params=encode_arrays(params),
                state=encode_checkpoint(strategy, strategy.init_state(params), arrays),
                record={"round": round, **({"schema": schema} if round == 0 else {})},
                duration_s=0.0,
            )
        version = register_final_model(store, study_id, study)[0].version
    return home, version


def test_models_export_writes_a_bundle_site_predict_runs(trained: Trained, tmp_path: Path) -> None:
    home, version = _home(trained, tmp_path)
    out = tmp_path / "export"
    done = runner.invoke(app, ["models", "export", version, "--out", str(out), "--home", str(home)])
    assert done.exit_code == 0, done.output
    bundle = load_bundle(out)
    assert bundle.features == list(trained.data.feature_names) and bundle.missing == []
    assert bundle.threshold == 0.4 and bundle.statistics_source == "federation"
    assert bundle.description["source"]["version"] == version
    assert json.loads((out / "lineage.json").read_text())[0]["version"] == version
    assert bundle.statistics is not None
    assert np.array_equal(
        bundle.statistics["std"], trained.result.model.arrays["preprocess"]["std"]
    )

    site = trained.data.site("switzerland")
    trained.frame(site).to_csv(tmp_path / "rows.csv", index=False)
    scores_path = tmp_path / "scores.csv"
    args = ["site", "predict", "--model", str(out), "--input", str(tmp_path / "rows.csv")]
    predicted = runner.invoke(app, [*args, "--out", str(scores_path)])
    assert predicted.exit_code == 0, predicted.output
    scores = pd.read_csv(scores_path)
    expected = trained.expected(site)
    assert np.max(np.abs(scores["score"].to_numpy() - expected)) <= 1e-12
    assert np.array_equal(scores["predicted"], (expected >= 0.4).astype(int))


def test_an_export_over_an_older_one_leaves_a_loadable_bundle(
    trained: Trained, tmp_path: Path
) -> None:
    home, version = _home(trained, tmp_path)
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        _, plain = register(store, "no-statistics", None)  # a bundle without preprocess.npz
    out = tmp_path / "export"
    for exported in (version, plain):
        args = ["models", "export", exported, "--out", str(out), "--home", str(home)]
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
    assert not (out / "preprocess.npz").exists()  # the first export's, removed
    assert load_bundle(out).description["source"]["version"] == plain
