"""``fedcare site predict`` on a DICOM folder: one row of scores per image.

Every file under the folder (recursively; hidden files and ``DICOMDIR`` left out, as the DICOM
training loader does) is read with :func:`fedcare.data.loaders.dicom.read_image`: the training
loader's reading (modality LUT, colour averaged to grey, bilinear resizing to the model's
size), then the intensity mapping the bundle records (``bundle.json``'s ``image``, the same
:class:`~fedcare.data.image_input.ImageInput` the dataset's loader applied in training), then
the model. Images go ``IMAGE_BATCH`` at a time (bounded memory).

- Output columns: ``file`` (the path relative to the folder), ``sop_instance_uid`` (empty when
  the file has none), then the model's columns (``score``, ``predicted``...). Both ids stay at
  the site with the scores.
- A file that is not readable DICOM, has no pixel data or several frames, or whose pixel values
  lie outside the range the model was trained on (the bundle's ``intensity.range``: a 12-bit
  image given to a model of 8-bit ones, a CT in Hounsfield units), is **skipped**: the
  summary counts them and names each with the reason (``skipped``); the run fails only when no
  file at all could be scored.
- A bundle that records no image input (an export from before fedcare recorded it) keeps its
  size and channels from its input shape, but its intensity mapping cannot be known: refused,
  naming what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedcare.data.image_input import ImageInput
from fedcare.errors import ConfigError, DataError
from fedcare.inference.bundle import ModelBundle

__all__ = ["IMAGE_BATCH", "ImageRun", "bundle_image_input", "predict_dicom_folder"]

#: Images read and scored at a time.
IMAGE_BATCH = 256
ID_COLUMNS = ("file", "sop_instance_uid")


class _Scorer(Protocol):  # fedcare.inference.predict.Scorer
    bundle: ModelBundle

    def score_inputs(self, X: np.ndarray) -> np.ndarray: ...

    def output_columns(self, scores: np.ndarray, threshold: float) -> dict[str, np.ndarray]: ...


class _Sink(Protocol):  # fedcare.inference.predict.PredictionSink
    def write(self, ids: Any, outputs: dict[str, np.ndarray], X_raw: np.ndarray) -> None: ...

    def close(self) -> Path | None: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class ImageRun:
    """What :func:`predict_dicom_folder` wrote."""

    rows: int
    columns: list[str]
    log: Path | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)


def bundle_image_input(description: dict[str, Any], input_shape: tuple[int, ...]) -> ImageInput:
    """The image input a bundle records, checked against its input shape.

    Raises
    ------
    ConfigError
        The model does not take images, or the bundle records no (or another) image input.
    """
    if len(input_shape) != 3:
        raise ConfigError(
            f"the model takes rows of shape {list(input_shape)}, not images: give a .csv or "
            ".parquet file of its features"
        )
    recorded = description.get("image")
    if not isinstance(recorded, dict) or "intensity" not in recorded:
        raise ConfigError(
            "the bundle does not record how its model's images were prepared in training "
            "(bundle.json has no image.intensity: offset and divisor), so DICOM pixels cannot "
            f"be mapped as training mapped them (size {list(input_shape[1:])} and "
            f"{input_shape[0]} channel(s) are known from its input shape); export the model "
            "again from a study on a dataset that records it (pneumoniamnist)"
        )
    image = ImageInput.from_json({"size": list(input_shape[1:]), "channels": input_shape[0],
                                  **recorded})  # fmt: skip
    if image.shape != tuple(input_shape):
        raise ConfigError(f"the bundle's image input {image.shape} is not its input shape "
                          f"{list(input_shape)}")  # fmt: skip
    return image


def _read_batch(
    files: list[Path], root: Path, image: ImageInput, skipped: list[dict[str, str]]
) -> tuple[list[str], list[str], np.ndarray]:
    from fedcare.data.loaders.dicom import read_image

    names, uids, pixels = [], [], []
    for file in files:
        name = file.relative_to(root).as_posix() if file != root else file.name
        try:
            array, uid = read_image(file, image.size)
        except DataError as err:
            skipped.append({"file": name, "reason": str(err).replace(str(file), name)})
            continue
        problem = image.out_of_range(array)
        if problem is not None:  # e.g. a 12-bit image and a model of 8-bit ones: not scored
            skipped.append({"file": name, "reason": problem})
            continue
        names.append(name)
        uids.append(uid or "")
        pixels.append(array)
    stacked = np.stack(pixels) if pixels else np.zeros((0, *image.size), np.float32)
    return names, uids, stacked


def predict_dicom_folder(
    scorer: _Scorer, folder: Path, out: Path, threshold: float, log: _Sink | None = None
) -> ImageRun:
    """Score every DICOM image under ``folder`` into ``out`` (CSV); see the module docstring.

    Raises
    ------
    ConfigError
        The bundle records no image input, or pydicom is not installed.
    DataError
        The folder holds no file, or no file could be scored (the first reasons named).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from fedcare.data.loaders.dicom import dicom_files

    bundle = scorer.bundle
    image = bundle_image_input(dict(bundle.description), bundle.input_shape)
    files = dicom_files(folder)
    skipped: list[dict[str, str]] = []
    rows, names, writer = 0, list(ID_COLUMNS), None
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        for i in range(0, len(files), IMAGE_BATCH):
            ids, uids, pixels = _read_batch(files[i : i + IMAGE_BATCH], folder, image, skipped)
            if not ids:
                continue
            columns = scorer.output_columns(scorer.score_inputs(image.apply(pixels)), threshold)
            if log is not None:
                log.write(ids, columns, np.zeros((len(ids), 0)))
            arrays = [pa.array(ids, pa.string()), pa.array(uids, pa.string())]
            table = pa.Table.from_arrays(
                arrays + [pa.array(v) for v in columns.values()], names=[*ID_COLUMNS, *columns]
            )
            names = list(table.column_names)
            if writer is None:
                writer = pacsv.CSVWriter(str(partial), table.schema)
            writer.write_table(table)
            rows += len(ids)
        if writer is None:
            reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3])
            raise DataError(f"no file under {folder} could be scored as an image: {reasons}")
    except BaseException:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
        if log is not None:
            log.abort()
        raise
    writer.close()
    partial.replace(out)
    logged = log.close() if log is not None else None
    return ImageRun(rows, names, logged, skipped)
