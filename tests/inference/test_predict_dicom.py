"""``site predict`` on a DICOM folder: real DICOM files written with pydicom from PneumoniaMNIST
images score exactly as the same images prepared by the training loaders (PneumoniaMNIST's,
and the DICOM source's resizing); unreadable files are skipped and named; a bundle that does
not record its image input is refused naming what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.data import pneumonia
from fedcare.data.loaders import load_table
from fedcare.data.loaders.dicom import resize_bilinear
from fedcare.data.source import fetch_files
from fedcare.errors import ConfigError, DataError
from fedcare.inference import predict_images
from fedcare.inference.bundle import build_bundle, bundle_from_study, load_bundle, write_bundle
from fedcare.inference.predict import predict_file
from fedcare.models.base import ModelAdapter
from fedcare.models.registry import build_model
from fedcare.records.arrays import ArrayRecord

from ..conftest import require_mirror

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("torch")
pytestmark = pytest.mark.torch

runner = CliRunner(env={"COLUMNS": "240"})
Model = tuple[Path, ModelAdapter, ArrayRecord]
MODEL = {"kind": "torch", "architecture": "cnn_small", "channels": [4, 8], "hidden": 16}


def write_dicom(path: Path, image: np.ndarray, *, uid: str, pixels: bool = True) -> None:
    """``image`` (2-D uint8, or 3-D: frames) as a MONOCHROME2 DICOM file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = UID(uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.Modality, ds.PatientSex = "OT", "F"
    if pixels:
        ds.Rows, ds.Columns = image.shape[-2:]
        if image.ndim == 3:
            ds.NumberOfFrames = image.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        if image.dtype == np.uint16:  # a 12-bit image stored in 16 bits
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        else:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.ascontiguousarray(image, dtype=image.dtype).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    """PneumoniaMNIST's first 40 validation images (uint8) and labels, as the file holds them."""
    require_mirror()
    with np.load(fetch_files(pneumonia.FOLDER, (pneumonia.FILE,))[pneumonia.FILE]) as npz:
        return {"val_images": npz["val_images"][:40], "val_labels": npz["val_labels"][:40]}


@pytest.fixture(scope="module")
def model_bundle(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """An image model (a small CNN, seeded init) and its bundle as the coordinator exports it."""
    adapter = build_model(MODEL)
    params = adapter.init_params((1, 28, 28), np.random.default_rng(7))
    files = bundle_from_study(
        {"dataset": {"name": "pneumoniamnist"}, "model": MODEL},
        params=dict(params),
        task_arrays={},
        feature_names=pneumonia.CHANNELS,
        input_shape=(1, 28, 28),
        task="binary",
        source={"version": "cnn-1"},
    )
    return write_bundle(files, tmp_path_factory.mktemp("bundle") / "cnn"), adapter, params


def test_scores_equal_the_model_on_the_training_loaders_images(
    images: dict[str, np.ndarray], model_bundle: Model, tmp_path: Path
) -> None:
    bundle_dir, adapter, params = model_bundle
    raw = images["val_images"]
    folder = tmp_path / "dicom"
    uids = [f"1.2.826.0.1.3680043.8.498.{1000 + i}" for i in range(len(raw))]
    for i, image in enumerate(raw):  # nested folders: ids are relative paths
        write_dicom(
            folder / f"series-{i % 3}" / f"img{i:02d}.dcm", image.astype(np.uint8), uid=uids[i]
        )
    big = np.round(resize_bilinear(raw[0], (50, 37))).astype(np.uint8)  # resized to 28x28
    write_dicom(folder / "big.dcm", big, uid="1.2.3.99")
    (folder / "notes.txt").write_text("not an image\n")
    write_dicom(folder / "series-0" / "nopixels.dcm", raw[0], uid="1.2.3.98", pixels=False)
    (folder / ".hidden.dcm").write_bytes(b"ignored")
    write_dicom(folder / "cine.dcm", raw[:2], uid="1.2.3.97")  # two frames
    deep = raw[0].astype(np.uint16) * 16  # 12-bit pixels: not what the 8-bit model saw
    write_dicom(folder / "ct12bit.dcm", deep, uid="1.2.3.96")

    out = tmp_path / "scores.csv"
    bundle = load_bundle(bundle_dir)
    assert bundle.image == {"size": [28, 28], "channels": 1,
                            "intensity": {"offset": 0.0, "divisor": 255.0,
                                          "range": [0.0, 255.0]}}  # fmt: skip
    summary = predict_file(bundle, folder, out)
    assert summary.rows == len(raw) + 1
    assert summary.columns == ["file", "sop_instance_uid", "score", "predicted"]
    skipped = ["cine.dcm", "ct12bit.dcm", "notes.txt", "series-0/nopixels.dcm"]
    assert sorted(s["file"] for s in summary.skipped) == skipped
    reasons = {s["file"]: s["reason"] for s in summary.skipped}
    assert "has 2 frames; only 1 is supported" in reasons["cine.dcm"]
    assert "cannot be read" in reasons["notes.txt"]
    assert "has no pixel data" in reasons["series-0/nopixels.dcm"]
    assert (
        f"pixel values {int(deep.min())} to {int(deep.max())} lie outside the range the model "
        "was trained on (0 to 255)" in reasons["ct12bit.dcm"]
    )
    scores = pd.read_csv(out, dtype={"sop_instance_uid": str}).set_index("file")

    # the training path: PneumoniaMNIST's loader prepares the same uint8 images
    train_X = pneumonia._split({"val_images": raw, "val_labels": images["val_labels"]}, "val").X
    expected = adapter.predict(params, train_X)
    names = [f"series-{i % 3}/img{i:02d}.dcm" for i in range(len(raw))]
    got = scores.loc[names, "score"].to_numpy()
    assert np.max(np.abs(got - expected)) <= 1e-6
    assert list(scores.loc[names, "sop_instance_uid"]) == uids
    assert np.array_equal(scores.loc[names, "predicted"], (expected >= 0.5).astype(int))
    assert np.ptp(expected) > 1e-4  # the images differ, so do their scores

    # the resized image: the DICOM source loader's pixels (size 28x28), then the intensity
    frame = load_table({"kind": "dicom", "path": str(folder / "big.dcm"), "pixels": True,
                        "size": [28, 28]})  # fmt: skip
    loaded = pneumonia.PNEUMONIAMNIST_INPUT.apply(np.stack(list(frame["pixels"])))
    want = adapter.predict(params, loaded)
    assert abs(scores.loc["big.dcm", "score"] - want[0]) <= 1e-6
    assert scores.loc["big.dcm", "sop_instance_uid"] == "1.2.3.99"
    assert not np.array_equal(np.stack(list(frame["pixels"]))[0], raw[0])  # resampled, not copied


def test_small_batches_give_the_same_rows(
    images: dict[str, np.ndarray],
    model_bundle: Model,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle_dir, _, _ = model_bundle
    for i, image in enumerate(images["val_images"][:10]):
        write_dicom(tmp_path / "in" / f"{i}.dcm", image, uid=f"1.2.3.{i}")
    bundle = load_bundle(bundle_dir)
    predict_file(bundle, tmp_path / "in", tmp_path / "a.csv")
    monkeypatch.setattr(predict_images, "IMAGE_BATCH", 3)
    predict_file(bundle, tmp_path / "in", tmp_path / "b.csv")
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert len(a) == 10 and a[["file", "predicted"]].equals(b[["file", "predicted"]])
    assert np.max(np.abs(a["score"] - b["score"])) <= 1e-6


def test_folders_without_images_and_bundles_without_an_image_input_are_refused(
    images: dict[str, np.ndarray], model_bundle: Model, tmp_path: Path
) -> None:
    bundle_dir, _, params = model_bundle
    bundle = load_bundle(bundle_dir)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"no file under .* could be scored .*a\.txt: DICOM"):
        predict_file(bundle, tmp_path / "junk", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no files"):
        predict_file(bundle, tmp_path / "empty", tmp_path / "out.csv")

    old = build_bundle(  # an export from before bundles recorded the image input
        model=MODEL, params=dict(params), feature_names=[], input_shape=[1, 28, 28],
        preprocessing={}, task="binary", source={"version": "old"},
    )  # fmt: skip
    write_dicom(tmp_path / "one" / "a.dcm", images["val_images"][0], uid="1.2.3")
    with pytest.raises(ConfigError, match=r"no image\.intensity.*size \[28, 28\] and 1 chan"):
        predict_file(load_bundle(write_bundle(old, tmp_path / "old")), tmp_path / "one",
                     tmp_path / "out.csv")  # fmt: skip
    tabular = build_bundle(
        model={"kind": "logistic"}, params={"weight": np.zeros(3), "bias": np.zeros(())},
        feature_names=["a", "b", "c"], input_shape=[3], preprocessing={},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"rows of shape \[3\], not images"):
        predict_file(load_bundle(write_bundle(tabular, tmp_path / "tab")), tmp_path / "one",
                     tmp_path / "out.csv")  # fmt: skip
    with pytest.raises(ConfigError, match="DICOM rows are named by file"):
        predict_file(bundle, tmp_path / "one", tmp_path / "out.csv", id_column="patient")
    with pytest.raises(ConfigError, match="give a DICOM folder"):
        (tmp_path / "rows.csv").write_text("grayscale\n1\n")
        predict_file(bundle, tmp_path / "rows.csv", tmp_path / "out.csv")


def test_site_predict_reads_a_dicom_folder_on_the_command_line(
    images: dict[str, np.ndarray], model_bundle: Model, tmp_path: Path
) -> None:
    bundle_dir, adapter, params = model_bundle
    for i, image in enumerate(images["val_images"][:5]):
        write_dicom(tmp_path / "in" / f"{i}.dcm", image, uid=f"1.2.3.{i}")
    (tmp_path / "in" / "README").write_text("scanner export\n")
    out = tmp_path / "predictions.csv"
    args = ["site", "predict", "--model", str(bundle_dir), "--input", str(tmp_path / "in")]
    done = runner.invoke(app, [*args, "--out", str(out), "--log-to", str(tmp_path / "log"),
                               "--json"])  # fmt: skip
    assert done.exit_code == 0, done.output
    told = json.loads(done.stdout)
    assert told["rows"] == 5 and [s["file"] for s in told["skipped"]] == ["README"]
    logged = pd.read_parquet(told["log"])
    assert list(logged["id"]) == [f"{i}.dcm" for i in range(5)]
    scores = pd.read_csv(out)
    train_X = pneumonia.PNEUMONIAMNIST_INPUT.apply(images["val_images"][:5])
    expected = adapter.predict(params, train_X)
    assert np.max(np.abs(scores["score"].to_numpy() - expected)) <= 1e-6

    plain = runner.invoke(app, [*args, "--out", str(out), "--no-log"])
    assert plain.exit_code == 0, plain.output
    assert "skipped 1 file(s) that could not be scored as images" in plain.output
    assert "README: DICOM file README cannot be read" in plain.output
    assert "5 rows scored (threshold 0.5)" in plain.output
