"""DICOM loader: tags, pixels, identifying attributes, corrupt files."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from fedcare.data.loaders import load_table  # noqa: E402
from fedcare.data.loaders.dicom import resize_bilinear  # noqa: E402
from fedcare.errors import ConfigError, DataError  # noqa: E402

SECRETS = ("Doe^Jane", "MRN-0042", "19700101", "St Elsewhere")
TAGS = ["PatientSex", "PatientAge", "Modality", "Rows", "Columns"]


def write_dicom(
    path: Path, pixels: np.ndarray, *, sex: str = "F", slope: float = 1.0, intercept: float = 0.0
) -> Path:
    """A small CT file with identifying attributes set, as a hospital export would have."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study", path.name])
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.InstitutionName = SECRETS
    ds.PatientSex, ds.PatientAge, ds.Modality = sex, "054Y", "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "scans"
    (root / "sub").mkdir(parents=True)
    ramp = np.add.outer(np.arange(8) * 10, np.arange(6)).astype(np.uint16)  # 8 x 6
    write_dicom(root / "a.dcm", ramp, sex="F", slope=2.0, intercept=-100.0)
    write_dicom(root / "sub" / "b", np.full((4, 4), 7, dtype=np.uint16), sex="M")
    return root


def test_one_row_per_file_with_tags(folder: Path) -> None:
    df = load_table({"kind": "dicom", "path": "scans", "tags": TAGS}, base_dir=folder.parent)
    assert list(df.columns) == TAGS
    assert df.attrs["files"] == ["a.dcm", "sub/b"]
    assert df["PatientSex"].tolist() == ["F", "M"]
    assert df["Rows"].tolist() == [8, 4]
    assert df["Columns"].tolist() == [6, 4]
    assert df.attrs["skipped"] == []


def test_identifying_values_never_appear(folder: Path) -> None:
    df = load_table({"kind": "dicom", "path": str(folder), "tags": TAGS, "pixels": True})
    text = df.drop(columns="pixels").to_string() + repr(df.attrs)
    for secret in SECRETS:
        assert secret not in text
    assert not {"PatientName", "PatientID", "PatientBirthDate", "InstitutionName"} & set(df)


@pytest.mark.parametrize("tag", ["PatientName", "PatientID", "StudyInstanceUID", "StudyDate"])
def test_asking_for_an_identifying_tag_fails(folder: Path, tag: str) -> None:
    with pytest.raises(ConfigError, match=f"never returned: {tag}"):
        load_table({"kind": "dicom", "path": str(folder), "tags": ["Modality", tag]})


def test_person_names_unknown_and_binary_tags_fail(folder: Path) -> None:
    with pytest.raises(ConfigError, match="'ReviewerName' is a person name"):
        load_table({"kind": "dicom", "path": str(folder), "tags": ["ReviewerName"]})
    with pytest.raises(ConfigError, match="'PatientWeigth' is not a DICOM attribute keyword"):
        load_table({"kind": "dicom", "path": str(folder), "tags": ["PatientWeigth"]})
    with pytest.raises(ConfigError, match="'PixelData' has VR OB or OW, not a plain value"):
        load_table({"kind": "dicom", "path": str(folder), "tags": ["PixelData"]})


def test_pixels_apply_rescale_and_resize(folder: Path) -> None:
    df = load_table({"kind": "dicom", "path": str(folder), "pixels": True, "size": [15, 11]})
    first = df.loc[0, "pixels"]
    assert first.shape == (15, 11)
    assert first.dtype == np.float32
    # stored values r*10 + c, rescaled 2*v - 100; bilinear keeps the ramp linear
    rows = np.linspace(0, 7, 15)[:, None]
    cols = np.linspace(0, 5, 11)[None, :]
    np.testing.assert_allclose(first, 2 * (rows * 10 + cols) - 100, atol=1e-4)
    np.testing.assert_allclose(df.loc[1, "pixels"], 7.0)


def test_native_size_without_resize(folder: Path) -> None:
    df = load_table({"kind": "dicom", "path": str(folder / "a.dcm"), "pixels": True})
    assert df.loc[0, "pixels"].shape == (8, 6)
    assert df.attrs["files"] == ["a.dcm"]


def test_resize_bilinear_does_not_mutate_and_checks_shape() -> None:
    image = np.arange(12.0).reshape(3, 4)
    before = image.copy()
    out = resize_bilinear(image, (3, 4))
    np.testing.assert_array_equal(out, before)
    np.testing.assert_array_equal(image, before)
    assert resize_bilinear(image, (1, 1))[0, 0] == 0.0
    with pytest.raises(ValueError, match="2-D"):
        resize_bilinear(np.zeros(3), (2, 2))


def test_pydicom_bundled_files() -> None:
    ct, mr = get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")
    assert ct is not None and mr is not None
    for name in (ct, mr):
        df = load_table(
            {"kind": "dicom", "path": name, "tags": TAGS, "pixels": True, "size": [32, 32]}
        )
        assert df.loc[0, "pixels"].shape == (32, 32)
        assert np.isfinite(df.loc[0, "pixels"]).all()
        assert "CompressedSamples" not in df.drop(columns="pixels").to_string()  # PatientName


def test_corrupt_file_aborts_naming_it(folder: Path) -> None:
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"DICOM file .*notes\.txt cannot be read"):
        load_table({"kind": "dicom", "path": str(folder), "tags": TAGS})


def test_corrupt_file_is_listed_when_skipping(folder: Path) -> None:
    (folder / "notes.txt").write_text("not an image")
    good = folder / "a.dcm"
    (folder / "truncated.dcm").write_bytes(good.read_bytes()[:200])
    (folder / ".hidden").write_text("ignored")
    df = load_table(
        {"kind": "dicom", "path": str(folder), "tags": TAGS, "pixels": True, "on_error": "skip"}
    )
    assert len(df) == 2
    skipped = {s["file"]: s["reason"] for s in df.attrs["skipped"]}
    assert set(skipped) == {"notes.txt", "truncated.dcm"}
    assert "notes.txt" in skipped["notes.txt"]


def test_missing_and_empty_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"DICOM source {tmp_path / 'nope'} does not exist"):
        load_table({"kind": "dicom", "path": "nope"}, base_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no files"):
        load_table({"kind": "dicom", "path": "empty"}, base_dir=tmp_path)


def test_without_pydicom_the_error_says_what_to_install(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ConfigError, match=r"needs pydicom: pip install 'fedcare\[dicom\]'"):
        load_table({"kind": "dicom", "path": str(folder)})


def test_copied_bundled_files_in_a_folder(tmp_path: Path) -> None:
    for name in ("CT_small.dcm", "MR_small.dcm"):
        path = get_testdata_file(name)
        assert path is not None
        shutil.copy(path, tmp_path / name)
    df = load_table({"kind": "dicom", "path": str(tmp_path), "tags": ["Modality", "Rows"]})
    assert df["Modality"].tolist() == ["CT", "MR"]
    assert df["Rows"].tolist() == [128, 64]
