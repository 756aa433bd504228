"""DICOM sources: one row per file, selected non-identifying tags plus (optionally) pixels.

Choices, documented here for data stewards:

- **Identifying attributes never leave this module.** Asking for one (PS3.15 Basic Profile:
  names, IDs, birth date, addresses, institution, physicians, accession numbers, UIDs, dates
  and times) is a :class:`~fedcare.errors.ConfigError`; person-name (PN) attributes are refused
  too. Patient sex, age, size and weight are kept (the profile's "Retain Patient
  Characteristics Option").
- **Pixels go to a column.** With ``pixels: true`` the frame has a ``pixels`` column holding one
  float32 array per row (modality LUT applied: rescale slope and intercept), so rows and images
  stay aligned through filtering and splitting. With ``size`` each image is resized by bilinear
  interpolation (numpy only); colour images are averaged to grey; multi-frame files are refused.
- **Unreadable files are reported, not dropped.** By default the first corrupt or non-DICOM
  file aborts with a :class:`~fedcare.errors.DataError` naming it; with ``on_error: skip`` the
  load goes on and ``df.attrs["skipped"]`` lists ``{"file", "reason"}`` for each one.
- ``df.attrs["files"]`` lists the files (relative to the source folder) in row order; file names
  are kept out of the columns because some exports put patient names in them. Hidden files and
  ``DICOMDIR`` index files are not read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcare.data.loaders.base import DicomSource, resolve_path
from fedcare.errors import ConfigError, DataError

__all__ = ["dicom_files", "load_dicom", "read_image", "resize_bilinear"]

_PLAIN_VRS = frozenset(
    {"AE", "AS", "CS", "DS", "FD", "FL", "IS", "LO", "SH", "SL", "SS", "ST", "UL", "US", "LT",
     "UT", "UC", "SV", "UV"}
)  # fmt: skip


def load_dicom(spec: DicomSource, base_dir: Path | None) -> pd.DataFrame:
    """Read every DICOM file under the spec's path into one row each.

    Raises
    ------
    ConfigError
        pydicom is not installed, or a tag is unknown, identifying or not a plain value.
    DataError
        The path is missing or has no files, or (with ``on_error: raise``) a file cannot be read
        as DICOM or its pixels cannot be decoded; the message names the file.
    """
    pydicom = _import_pydicom()
    _check_tags(spec.tags, pydicom)
    root = resolve_path(spec.path, base_dir)
    files = _list_files(root)
    rows: list[dict[str, Any]] = []
    names: list[str] = []
    skipped: list[dict[str, str]] = []
    for file in files:
        name = file.name if file == root else file.relative_to(root).as_posix()
        try:
            rows.append(_read_row(file, spec, pydicom))
        except DataError as err:
            if spec.on_error == "raise":
                raise
            skipped.append({"file": name, "reason": str(err)})
            continue
        names.append(name)
    columns = [*spec.tags, *(["pixels"] if spec.pixels else [])]
    frame = pd.DataFrame(rows, columns=columns)
    frame.attrs["files"] = names
    frame.attrs["skipped"] = skipped
    return frame


def dicom_files(root: Path) -> list[Path]:
    """The files a DICOM source at ``root`` reads, sorted (hidden files and ``DICOMDIR`` left
    out); DataError when ``root`` is missing or holds no file."""
    return _list_files(Path(root))


def read_image(file: Path, size: tuple[int, int] | None) -> tuple[np.ndarray, str | None]:
    """The pixels of one DICOM file as :func:`load_dicom` reads them with ``pixels: true``
    (modality LUT, colour averaged to grey, resized to ``size``; float32), and its
    SOPInstanceUID (``None`` when absent).

    Raises
    ------
    ConfigError
        pydicom is not installed.
    DataError
        The file is not readable DICOM, has no or undecodable pixels, or several frames.
    """
    pydicom = _import_pydicom()
    try:
        ds = pydicom.dcmread(file)
    except Exception as err:  # pydicom raises many types for bad input; all mean "unreadable"
        raise DataError(f"DICOM file {file} cannot be read: {_first_line(err)}") from None
    if "PixelData" not in ds:
        raise DataError(f"DICOM file {file} has no pixel data")
    uid = ds.get("SOPInstanceUID")
    return _pixels(file, ds, size, pydicom), None if uid is None else str(uid)


def _import_pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise ConfigError(
            "the dicom source kind needs pydicom: pip install 'fedcare[dicom]'"
        ) from None
    return pydicom


def _check_tags(tags: Sequence[str], pydicom: Any) -> None:
    from pydicom import datadict

    for tag in tags:
        if datadict.tag_for_keyword(tag) is None:
            raise ConfigError(f"source.tags: {tag!r} is not a DICOM attribute keyword")
        vr = datadict.dictionary_VR(tag)
        if vr == "PN":
            raise ConfigError(
                f"source.tags: {tag!r} is a person name; identifying DICOM attributes are "
                "never returned"
            )
        if vr not in _PLAIN_VRS:
            raise ConfigError(f"source.tags: {tag!r} has VR {vr}, not a plain value")


def _list_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"DICOM source {root} does not exist")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.name != "DICOMDIR"
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise DataError(f"DICOM source {root} has no files")
    return files


def _read_row(file: Path, spec: DicomSource, pydicom: Any) -> dict[str, Any]:
    try:
        ds = pydicom.dcmread(file, stop_before_pixels=not spec.pixels)
    except Exception as err:  # pydicom raises many types for bad input; all mean "unreadable"
        raise DataError(f"DICOM file {file} cannot be read: {_first_line(err)}") from None
    row: dict[str, Any] = {}
    for tag in spec.tags:
        try:
            row[tag] = _plain(ds.get(tag))
        except Exception as err:
            raise DataError(f"DICOM file {file}: tag {tag}: {_first_line(err)}") from None
    if spec.pixels:
        row["pixels"] = _pixels(file, ds, spec.size, pydicom)
    return row


def _pixels(file: Path, ds: Any, size: tuple[int, int] | None, pydicom: Any) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise DataError(f"DICOM file {file} has {ds.NumberOfFrames} frames; only 1 is supported")
    try:
        image = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
    except Exception as err:
        raise DataError(
            f"DICOM file {file}: pixel data cannot be decoded: {_first_line(err)}"
        ) from None
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1 and image.ndim == 3:
        image = image.mean(axis=-1)
    if image.ndim != 2:
        raise DataError(f"DICOM file {file}: pixel array has shape {image.shape}, expected 2-D")
    if size is not None:
        image = resize_bilinear(image, size)
    return image.astype(np.float32)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (2-D) resampled to ``size`` = (rows, columns) by bilinear interpolation.

    Corner pixels map to corner pixels; a linear ramp stays exactly linear. Returns a new
    float64 array and leaves ``image`` unchanged.
    """
    src = np.asarray(image, dtype=np.float64)
    if src.ndim != 2 or min(src.shape) < 1:
        raise ValueError(f"image must be a non-empty 2-D array, got shape {src.shape}")
    rows, cols = size
    r = np.linspace(0.0, src.shape[0] - 1, rows)
    c = np.linspace(0.0, src.shape[1] - 1, cols)
    r0 = np.floor(r).astype(int)
    c0 = np.floor(c).astype(int)
    r1 = np.minimum(r0 + 1, src.shape[0] - 1)
    c1 = np.minimum(c0 + 1, src.shape[1] - 1)
    fr = (r - r0)[:, None]
    fc = (c - c0)[None, :]
    top = src[np.ix_(r0, c0)] * (1 - fc) + src[np.ix_(r0, c1)] * fc
    bottom = src[np.ix_(r1, c0)] * (1 - fc) + src[np.ix_(r1, c1)] * fc
    out: np.ndarray = top * (1 - fr) + bottom * fr
    return out


def _plain(value: Any) -> Any:
    """A pydicom element value as plain Python: str, int, float, a tuple of those, or None."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import IS, DSdecimal, DSfloat

    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, DSfloat | DSdecimal):
        return float(value)
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace").strip()
    return str(value).strip()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
