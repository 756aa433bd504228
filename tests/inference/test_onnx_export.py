"""ONNX export: onnxruntime's scores on raw rows (missing values included) equal fedcare's
within 1e-5 for the logistic, Cox, scikit-learn and torch models (issue 15's parity target)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.inference.bundle import ModelBundle, build_bundle, load_bundle, write_bundle
from fedcare.inference.onnx_export import export_onnx, onnx_model, run_onnx
from fedcare.inference.predict import Scorer

from .conftest import Trained

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (fedcare[onnx])")
pytest.importorskip("onnx", reason="the onnx extra is not installed (fedcare[onnx])")

PARITY = 1e-5
runner = CliRunner(env={"COLUMNS": "240"})


def _raw_rows(trained: Trained) -> np.ndarray:
    X = np.concatenate([s.test.X for s in trained.data.sites])
    assert np.isnan(X).any()  # the graph imputes them itself
    return X


def _bundle(trained: Trained, tmp_path: Path, **changes: object) -> ModelBundle:
    description = json.loads(trained.files["bundle.json"])
    files = build_bundle(
        model=changes.get("model", description["model"]),  # type: ignore[arg-type]
        params=dict(changes.get("params", trained.result.model.params)),  # type: ignore[call-overload]
        feature_names=description["features"],
        input_shape=description["input_shape"],
        preprocessing={"impute": "mean", "scale": "global"},
        statistics=trained.result.model.arrays["preprocess"],
        threshold=0.5,
    )
    return load_bundle(write_bundle(files, tmp_path / "bundle"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logistic_graph_matches_site_predict(
    trained: Trained, bundle_dir: Path, tmp_path: Path, dtype: str
) -> None:
    bundle = load_bundle(bundle_dir)
    X = _raw_rows(trained)
    path = export_onnx(bundle, tmp_path / "model.onnx", input_dtype=dtype)
    got = run_onnx(path, X)
    expected = Scorer(bundle)(X)
    assert np.max(np.abs(got["score"] - expected)) <= PARITY
    clear = np.abs(expected - 0.5) > PARITY
    assert np.array_equal(got["predicted"][clear], (expected[clear] >= 0.5).astype(np.int64))
    model = onnx_model(bundle)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["fedcare.features"]) == bundle.features
    assert meta["fedcare.bundle_sha256"] == bundle.bundle_hash
    assert {n.op_type for n in model.graph.node} >= {"IsNaN", "Where", "Sub", "Div", "Sigmoid"}


def test_cox_graph_matches(trained: Trained, tmp_path: Path) -> None:
    bundle = _bundle(trained, tmp_path, model={"kind": "cox"})
    X = _raw_rows(trained)
    got = run_onnx(export_onnx(bundle, tmp_path / "cox.onnx"), X)
    assert list(got) == ["risk"]
    assert np.max(np.abs(got["risk"] - Scorer(bundle)(X))) <= PARITY


def test_sklearn_model_through_skl2onnx_matches(trained: Trained, tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx", reason="the onnx extra is not installed (fedcare[onnx])")
    bundle = _bundle(trained, tmp_path, model={"kind": "sklearn"})
    X = _raw_rows(trained)
    got = run_onnx(export_onnx(bundle, tmp_path / "sk.onnx"), X)
    expected = Scorer(bundle)(X)
    assert np.max(np.abs(got["probabilities"][:, 1] - expected)) <= PARITY
    clear = np.abs(expected - 0.5) > PARITY
    assert np.array_equal(got["label"][clear], (expected[clear] >= 0.5).astype(np.int64))


@pytest.mark.torch
def test_torch_model_through_torch_onnx_matches(trained: Trained, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the torch extra is not installed")
    from fedcare.models.registry import build_model

    spec = {"kind": "torch", "architecture": "mlp", "hidden": [16, 8]}
    params = build_model(spec).init_params((13,), np.random.default_rng(3))
    bundle = _bundle(trained, tmp_path, model=spec, params=params)
    X = _raw_rows(trained)
    got = run_onnx(export_onnx(bundle, tmp_path / "torch.onnx"), X)
    expected = Scorer(bundle)(X)
    assert got["score"].shape == expected.shape
    assert np.max(np.abs(got["score"] - expected)) <= PARITY


def test_export_onnx_on_the_command_line(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "heart.onnx"
    done = runner.invoke(
        app, ["site", "export-onnx", "--model", str(bundle_dir), "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert "input 'features' in this order: age, sex, trestbps" in done.output
    X = np.array([[63.0, 1, 145, 233, 1, 150, 0, 2.3, 0, 0, 0, 0, 1], [np.nan] * 13])
    got = run_onnx(out, X)
    assert np.max(np.abs(got["score"] - Scorer(load_bundle(bundle_dir))(X))) <= PARITY
