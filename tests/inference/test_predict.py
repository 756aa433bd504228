"""``site predict``: a bundle's scores on raw rows equal the trained model's on the rows the
site preprocessed; missing columns are errors naming them; CSV and Parquet agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.errors import DataError
from fedcare.inference import predict
from fedcare.inference.bundle import load_bundle
from fedcare.inference.predict import predict_file

from .conftest import Trained

runner = CliRunner(env={"COLUMNS": "240"})


def test_predictions_equal_the_trained_models_on_every_site(
    trained: Trained, bundle_dir: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(bundle_dir)
    missing = 0
    for site in trained.data.sites:
        frame = trained.frame(site)
        missing += int(frame[bundle.features].isna().sum().sum())
        source = tmp_path / f"{site.site_id}.csv"
        frame.to_csv(source, index=False)
        out = tmp_path / f"{site.site_id}-scores.csv"
        summary = predict_file(bundle, source, out, id_column="patient")
        assert summary.rows == len(frame) and summary.ignored_columns == ["note"]
        assert summary.columns == ["patient", "score", "predicted"]
        scores = pd.read_csv(out)
        expected = trained.expected(site)
        assert list(scores["patient"]) == list(frame["patient"])
        assert np.max(np.abs(scores["score"].to_numpy() - expected)) <= 1e-12
        assert np.array_equal(scores["predicted"].to_numpy(), (expected >= 0.5).astype(int))
    assert missing > 20  # the imputation ran (Switzerland and VA test rows miss values)


def test_parquet_and_small_chunks_give_the_same_scores(
    trained: Trained, bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_bundle(bundle_dir)
    site = trained.data.site("va")
    frame = trained.frame(site)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    frame.to_parquet(tmp_path / "rows.parquet", index=False)
    predict_file(bundle, tmp_path / "rows.csv", tmp_path / "a.csv", id_column="patient")
    monkeypatch.setattr(predict, "CHUNK_ROWS", 7)  # many batches of the Parquet file
    predict_file(bundle, tmp_path / "rows.parquet", tmp_path / "b.csv", id_column="patient")
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert len(a) == len(frame) and a[["patient", "predicted"]].equals(b[["patient", "predicted"]])
    assert np.max(np.abs(a["score"] - b["score"])) <= 1e-15  # BLAS may round per chunk size


def test_a_missing_column_is_an_error_naming_it(
    trained: Trained, bundle_dir: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(bundle_dir)
    frame = trained.frame(trained.data.sites[0]).drop(columns=["chol", "oldpeak"])
    frame.to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(DataError, match=r"no column 'chol' \(and 1 more: \['oldpeak'\]\)"):
        predict_file(bundle, tmp_path / "rows.csv", tmp_path / "out.csv")
    with pytest.raises(DataError, match="no id column 'mrn'"):
        trained.frame(trained.data.sites[0]).to_csv(tmp_path / "ok.csv", index=False)
        predict_file(bundle, tmp_path / "ok.csv", tmp_path / "out.csv", id_column="mrn")


def test_a_text_value_in_a_feature_is_an_error(
    trained: Trained, bundle_dir: Path, tmp_path: Path
) -> None:
    frame = trained.frame(trained.data.sites[0]).astype({"age": object})
    frame.loc[3, "age"] = "sixty"
    frame.to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(
        DataError, match="In column 'age': CSV conversion error to double: invalid value 'sixty'"
    ):
        predict_file(load_bundle(bundle_dir), tmp_path / "rows.csv", tmp_path / "out.csv")


def test_the_threshold_can_be_chosen(trained: Trained, bundle_dir: Path, tmp_path: Path) -> None:
    site = trained.data.sites[1]
    trained.frame(site).to_csv(tmp_path / "rows.csv", index=False)
    summary = predict_file(
        load_bundle(bundle_dir), tmp_path / "rows.csv", tmp_path / "out.csv", threshold=0.7
    )
    assert summary.threshold == 0.7 and summary.columns == ["score", "predicted"]
    scores = pd.read_csv(tmp_path / "out.csv")
    assert np.array_equal(scores["predicted"], (trained.expected(site) >= 0.7).astype(int))


def test_site_predict_on_the_command_line(
    trained: Trained, bundle_dir: Path, tmp_path: Path
) -> None:
    site = trained.data.site("hungary")
    trained.frame(site).to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "predictions.csv"
    args = ["site", "predict", "--model", str(bundle_dir), "--input", str(tmp_path / "rows.csv")]
    done = runner.invoke(app, [*args, "--out", str(out), "--id-column", "patient", "--json"])
    assert done.exit_code == 0, done.output
    told = json.loads(done.stdout)
    assert told["rows"] == len(site.test) and told["ignored_columns"] == ["note"]
    assert told["bundle_sha256"] == load_bundle(bundle_dir).bundle_hash
    scores = pd.read_csv(out)
    assert np.max(np.abs(scores["score"].to_numpy() - trained.expected(site))) <= 1e-12

    plain = runner.invoke(app, [*args, "--out", str(out)])
    assert plain.exit_code == 0, plain.output
    assert "ignored 2 column(s) the model does not use: patient, note" in plain.output
    assert f"{len(site.test)} rows scored (threshold 0.5)" in plain.output

    trained.frame(site).drop(columns=["thalach"]).to_csv(tmp_path / "bad.csv", index=False)
    bad = ["site", "predict", "--model", str(bundle_dir), "--input", str(tmp_path / "bad.csv")]
    failed = runner.invoke(app, [*bad, "--out", str(out)])
    assert failed.exit_code == 2 and "no column 'thalach'" in failed.output
    wrong = runner.invoke(app, [*args, "--expect-hash", "sha256:" + "1" * 64])
    assert wrong.exit_code == 2 and "expected sha256:1111" in wrong.output
