"""The site's prediction log, reference statistics and version folders
(fedcare.inference.monitor)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedcare.errors import NotFoundError, ValidationError
from fedcare.inference.bundle import build_bundle, load_bundle, write_bundle
from fedcare.inference.drift import feature_reference
from fedcare.inference.monitor import (
    FEATURE_PREFIX,
    PredictionLog,
    log_predictions,
    open_log_folder,
    read_predictions,
    read_reference,
    resolve_model,
    version_folder,
    write_reference,
)
from fedcare.inference.predict import Scorer, predict_file

from .conftest import Trained


def test_log_predictions_keeps_ids_scores_and_raw_features(tmp_path: Path) -> None:
    path = log_predictions(
        tmp_path,
        "run-1",
        ["a", "b", "c"],
        [0.1, 0.7, 0.4],
        [0, 1, 0],
        {"age": [50.0, np.nan, 70.0], "sex": [1.0, 0.0, 1.0]},
    )
    assert path == tmp_path / "predictions" / "run-1.parquet"
    table = pq.read_table(path)
    assert table.column_names == [
        "id",
        "score",
        "predicted",
        "run",
        "time",
        "feature:age",
        "feature:sex",
    ]
    assert table["id"].to_pylist() == ["a", "b", "c"]
    assert table["predicted"].to_pylist() == [0, 1, 0]
    assert np.isnan(table["feature:age"].to_pylist()[1])
    with pytest.raises(ValidationError, match="exists already"):
        log_predictions(tmp_path, "run-1", None, [0.5], None, {"age": [1.0]})
    with pytest.raises(ValidationError, match="lengths"):
        log_predictions(tmp_path, "run-2", ["a"], [0.5, 0.6], None, {"age": [1.0, 2.0]})
    assert not list((tmp_path / "predictions").glob("*.partial"))
    assert not (tmp_path / "predictions" / "run-2.parquet").exists()


def test_read_predictions_since_a_date(tmp_path: Path) -> None:
    log_predictions(tmp_path, "r1", [1, 2], [0.2, 0.9], [0, 1], {"x": [1.0, 2.0]})
    log_predictions(tmp_path, "r2", [3], [0.6], [1], {"x": [3.0]})
    table = read_predictions(tmp_path)
    assert table.num_rows == 3 and table["id"].to_pylist() == ["1", "2", "3"]
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    assert read_predictions(tmp_path, past).num_rows == 3
    assert read_predictions(tmp_path, datetime.now(timezone.utc) + timedelta(hours=1)) is None
    assert read_predictions(tmp_path / "nothing") is None


def test_predict_file_logs_what_it_wrote(
    trained: Trained, bundle_dir: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(bundle_dir)
    site = trained.data.site("cleveland")
    trained.frame(site).to_csv(tmp_path / "rows.csv", index=False)
    folder = open_log_folder(tmp_path / "v1", bundle)
    log = PredictionLog(folder, "run-a", bundle.features)
    summary = predict_file(
        bundle, tmp_path / "rows.csv", tmp_path / "out.csv", id_column="patient", log=log
    )
    assert summary.log == folder / "predictions" / "run-a.parquet"
    table = pq.read_table(summary.log)
    assert table["id"].to_pylist() == trained.frame(site)["patient"].tolist()
    assert np.max(np.abs(table["score"].to_numpy() - trained.expected(site))) <= 1e-12
    raw = np.column_stack([table[FEATURE_PREFIX + f].to_numpy() for f in bundle.features])
    assert np.array_equal(raw, site.test.X, equal_nan=True)
    assert load_bundle(folder / "bundle").bundle_hash == bundle.bundle_hash
    assert open_log_folder(folder, bundle) == folder  # the same model: fine
    zeros = build_bundle(
        model=bundle.model,
        params={"weight": np.zeros(len(bundle.features)), "bias": np.zeros(())},
        feature_names=bundle.features,
        input_shape=[len(bundle.features)],
        preprocessing={},
    )
    other = load_bundle(write_bundle(zeros, tmp_path / "other"))
    with pytest.raises(ValidationError, match="logs the predictions of another model"):
        open_log_folder(folder, other)


def test_write_reference_freezes_features_and_scores(
    trained: Trained, bundle_dir: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(bundle_dir)
    train = trained.data.site("cleveland").train.X
    path = write_reference(tmp_path, bundle, train)
    reference = read_reference(tmp_path)
    assert path == tmp_path / "reference.json" and reference is not None
    assert list(reference["features"]) == bundle.features
    assert reference["n"] == len(train) and reference["bundle_sha256"] == bundle.bundle_hash
    age = bundle.features.index("age")
    assert reference["features"]["age"] == feature_reference(train[:, age])
    assert reference["features"]["sex"]["kind"] == "categorical"
    assert reference["score"] == feature_reference(Scorer(bundle)(train))
    assert read_reference(tmp_path / "none") is None


def test_version_folder_and_model_resolution(tmp_path: Path) -> None:
    import json

    store = tmp_path / "state" / "models"
    (store / "heart-v3" / "bundle").mkdir(parents=True)
    (store / "index.json").write_text(json.dumps({"heart-v3": {"status": "active"}}))
    assert version_folder(store, "heart-v3") == store / "heart-v3"
    assert resolve_model("heart-v3", tmp_path / "state") == store / "heart-v3"
    assert resolve_model(str(store / "heart-v3"), tmp_path) == store / "heart-v3"
    with pytest.raises(NotFoundError, match="'heart-v4' is not in this site's model store"):
        version_folder(store, "heart-v4")
    with pytest.raises((NotFoundError, ValidationError), match="version"):
        version_folder(store, "../etc")
    with pytest.raises(NotFoundError, match="no bundle/ folder"):
        resolve_model(str(tmp_path), tmp_path)


def test_site_reference_from_the_site_data_file(
    trained: Trained, bundle_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from fedcare.cli.main import app

    bundle = load_bundle(bundle_dir)
    folder = open_log_folder(tmp_path / "v1", bundle)
    (tmp_path / "site.yaml").write_text(
        "datasets:\n  heart-disease:\n    builtin: heart-disease\n"
        "    options: {protocol: raw}\n    site: cleveland\n"
    )
    args = ["site", "reference", "--model", str(folder)]
    done = CliRunner().invoke(app, [*args, "--data", str(tmp_path / "site.yaml")])
    assert done.exit_code == 0, done.output
    train = trained.data.site("cleveland").train.X
    assert f"reference of {len(train)} training rows" in done.output
    kept = read_reference(folder)
    assert kept is not None
    assert (
        kept["features"]
        == read_reference(write_reference(tmp_path, bundle, train).parent)["features"]
    )
    both = CliRunner().invoke(app, args)
    assert both.exit_code == 2 and "--input FILE, or --data SITE.yaml" in both.output
    other = CliRunner().invoke(
        app, [*args, "--data", str(tmp_path / "site.yaml"), "--dataset", "eicu"]
    )
    assert other.exit_code == 2 and "has no dataset 'eicu'" in other.output
