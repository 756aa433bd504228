"""Saliency maps (fedcare.evaluation.saliency, saliency_page): they find what decides the class,
integrated gradients are complete, and the page is written with its PNGs."""

from __future__ import annotations

import json
import struct
import zlib
from functools import cache

import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.evaluation.saliency import attribute, choose_images, is_image_model, model_output
from fedcare.evaluation.saliency_page import png_bytes, render_panels, write_saliency_report
from fedcare.models.base import LocalTrainSpec
from fedcare.models.registry import build_model

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

SIDE = 16
#: The bright patch that makes an image positive: rows 2-5, columns 9-12 (6.25 % of the image).
PATCH = (slice(2, 6), slice(9, 13))
MODEL = {"kind": "torch", "architecture": "cnn_small", "channels": [8, 16], "hidden": 32}


def patch_images(n: int, rng: np.random.Generator) -> Dataset:
    """Uniform noise in [0, 0.5]; label 1 adds 0.8 inside :data:`PATCH`."""
    X = rng.uniform(0.0, 0.5, size=(n, 1, SIDE, SIDE)).astype(np.float32)
    y = (rng.random(n) < 0.5).astype(np.float64)
    X[y == 1, 0, PATCH[0], PATCH[1]] += 0.8
    return Dataset(X, y)


@cache
def trained() -> tuple[object, object, Dataset]:
    rng = np.random.default_rng(0)
    train, test = patch_images(400, rng), patch_images(100, rng)
    adapter = build_model(MODEL)
    params = adapter.init_params((1, SIDE, SIDE), np.random.default_rng(1))
    spec = LocalTrainSpec(epochs=5, lr=0.01, batch_size=32, optimizer="adam")
    params = adapter.fit(params, train, spec, np.random.default_rng(2)).params
    return adapter, params, test


def patch_share(attributions: np.ndarray) -> np.ndarray:
    """Per image: the share of the absolute attribution inside the patch."""
    a = np.abs(attributions).sum(axis=1)
    return a[:, PATCH[0], PATCH[1]].sum(axis=(1, 2)) / a.sum(axis=(1, 2))


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient"])
def test_saliency_concentrates_on_the_patch_that_decides_the_class(method: str) -> None:
    adapter, params, test = trained()
    scores = adapter.predict(params, test.X)
    assert np.mean((scores > 0.5) == test.y) > 0.95  # the net learned the patch
    rows = choose_images("binary", test.y, scores, 8, np.random.default_rng(3))
    positives = rows[test.y[rows] == 1]
    assert len(positives) == 4
    output, _ = model_output(adapter, params, test.X[positives])
    saliency = attribute(output, test.X[positives], method=method, steps=32)
    area = (4 * 4) / SIDE**2
    share = patch_share(saliency.attributions)
    assert share.min() > 3 * area, share  # measured: IG ~0.6, gradient ~0.29 (area 0.0625)


def test_integrated_gradients_add_up_to_the_output_difference() -> None:
    adapter, params, test = trained()
    images = test.X[:6]
    output, _ = model_output(adapter, params, images)
    saliency = attribute(output, images, method="integrated_gradients", steps=64)
    assert saliency.baseline_outputs is not None
    difference = saliency.outputs - saliency.baseline_outputs
    totals = saliency.attributions.reshape(len(images), -1).sum(axis=1)
    assert np.all(np.abs(difference) > 1.0)  # a non-trivial check
    np.testing.assert_allclose(totals, difference, rtol=0.02, atol=0.05)
    # the explained output is the logit the adapter's probability comes from
    probability = 1 / (1 + np.exp(-saliency.outputs))
    np.testing.assert_allclose(probability, adapter.predict(params, images), atol=1e-5)


def test_multiclass_explains_the_predicted_class() -> None:
    from fedcare.models.torch import make_torch_adapter
    from fedcare.models.torch_nets import architecture_factory

    adapter = make_torch_adapter(
        architecture_factory("cnn_small", channels=[4], hidden=8, outputs=3), "multiclass"
    )
    X = np.random.default_rng(0).uniform(size=(5, 1, 8, 8)).astype(np.float32)
    params = adapter.init_params((1, 8, 8), np.random.default_rng(0))
    output, target = model_output(adapter, params, X)
    np.testing.assert_array_equal(target, adapter.predict(params, X).argmax(axis=1))
    saliency = attribute(output, X, method="integrated_gradients", steps=16)
    assert saliency.attributions.shape == X.shape


def test_bad_methods_and_non_image_models_are_refused() -> None:
    adapter, params, test = trained()
    output, _ = model_output(adapter, params, test.X[:2])
    with pytest.raises(ModelError, match="unknown saliency method 'occlusion'"):
        attribute(output, test.X[:2], method="occlusion")
    assert is_image_model(adapter, test.X)
    assert not is_image_model(adapter, np.zeros((3, 5)))  # tabular rows
    assert not is_image_model(build_model({"kind": "logistic"}), test.X)


def test_choose_images_takes_the_surest_cases_of_each_class() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.2, 0.95, 0.1, 0.6, 0.05, 0.3, 0.5])
    rows = choose_images("binary", y, s, 4, np.random.default_rng(0))
    assert list(rows) == [2, 0, 5, 3]
    assert len(choose_images("binary", np.ones(8), s, 4, np.random.default_rng(0))) == 4
    other = choose_images("regression", y, s, 3, np.random.default_rng(0))
    assert len(set(other)) == 3 and np.all(np.diff(other) > 0)


def decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    start = data.index(b"IDAT") + 4
    (length,) = struct.unpack(">I", data[start - 8 : start - 4])
    raw = zlib.decompress(data[start : start + length])
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + 3 * w)
    assert np.all(rows[:, 0] == 0)  # filter type none
    return rows[:, 1:].reshape(h, w, 3)


def test_png_round_trips_and_panels_show_image_map_and_overlay() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    np.testing.assert_array_equal(decode_png(png_bytes(rgb)), rgb)
    image = np.zeros((1, 8, 8))
    attribution = np.zeros((1, 8, 8))
    attribution[0, 1, 1] = 1.0
    panels = render_panels(image, attribution)
    scale = 224 // 8
    assert panels.shape == (8 * scale, 3 * 8 * scale + 8, 3)
    heat = panels[:, 8 * scale + 4 : 16 * scale + 4]
    assert heat[scale + 1, scale + 1].tolist() == [252, 255, 164]  # the salient pixel: brightest
    assert heat[0, 0].tolist() == [0, 0, 4]


def test_report_folder_holds_page_pngs_and_no_pixel_values(tmp_path) -> None:
    adapter, params, test = trained()
    output, _ = model_output(adapter, params, test.X[:3])
    saliency = attribute(output, test.X[:3], steps=8)
    captions = [{"label": "1", "score": 0.9, "explained": "logit"}] * 3
    index = write_saliency_report(
        tmp_path / "s", saliency, study_id="st", site_id="a", task="binary", captions=captions
    )
    names = sorted(p.name for p in index.parent.iterdir())
    assert names == ["image-01.png", "image-02.png", "image-03.png", "index.html", "report.json"]
    html = index.read_text()
    assert "not a validated explanation" in html and 'src="image-02.png"' in html
    meta = json.loads((index.parent / "report.json").read_text())
    assert meta["images"] == 3 and meta["method"] == "integrated_gradients"
    assert set(meta) == {
        "kind",
        "study_id",
        "site_id",
        "task",
        "method",
        "steps",
        "images",
        "created",
    }
