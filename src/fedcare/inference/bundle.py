"""The model bundle: everything a model needs to be used, hashed, in JSON and ``.npz`` files.

A bundle is a folder (or a zip of the same files at its root)::

    bundle.json      format, model spec (kind, options), task, input shape, feature names in
                     order, preprocessing (impute, scale, where the statistics come from),
                     decision threshold, outputs, source (study, version, round), what is
                     missing; an image model's ``image`` (size, channels, intensity ``offset``
                     and ``divisor``: how training prepared its pixels, for DICOM input); a
                     package model's spec names its package by hash (``sha256:<hex>``)
    params.npz       the parameters, one array per name
    preprocess.npz   the frozen statistics ``mean`` and ``std`` (when they are known)
    model_card.json  the model card (when there is one)
    lineage.json     the version and its ancestors (coordinator exports)
    manifest.json    ``path, sha256, size`` of every other file and the bundle's hash: the
                     SHA-256 of that content list (never of zip bytes, which change with the
                     compressor)

No pickle anywhere: ``.npz`` files are read with ``allow_pickle=False``. :func:`load_bundle`
verifies every file against the manifest and refuses a bundle with a changed, missing or
unlisted file, naming it. (The manifest itself is trusted unless the caller gives the hash it
expects, e.g. the registry's; signatures come with deployment.)

Where the statistics come from (``preprocessing.statistics``):

- ``federation``: global scaling; the federation's mean and standard deviation are frozen in;
- ``site``: local scaling (or imputation with local means): each site trained with its own
  statistics, so a site that takes the model must freeze *its own* training statistics first
  (:func:`fedcare.inference.site_statistics.freeze_local_statistics`), which makes
  ``site-frozen`` (a new bundle hash);
- ``none``: the model takes the features as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.errors import ValidationError
from fedcare.inference.bundle_files import (
    BUNDLE_FILES,
    CARD,
    DESCRIPTION,
    FORMAT,
    FORMAT_VERSION,
    LINEAGE,
    MANIFEST,
    PARAMS,
    STATISTICS,
    json_bytes,
    manifest_of,
    npz_bytes,
    read_bundle_files,
    read_npz,
    sha256_of,
    with_manifest,
    write_bundle,
)
from fedcare.inference.frozen import FrozenPreprocessing

__all__ = [
    "BUNDLE_FILES",
    "CARD",
    "DESCRIPTION",
    "FORMAT",
    "FORMAT_VERSION",
    "LINEAGE",
    "MANIFEST",
    "PARAMS",
    "STATISTICS",
    "ModelBundle",
    "build_bundle",
    "bundle_from_study",
    "json_bytes",
    "load_bundle",
    "npz_bytes",
    "read_bundle_files",
    "study_threshold",
    "verify_files",
    "with_manifest",
    "write_bundle",
]


_TASKS = {"logistic": "binary", "sklearn": "binary", "cox": "survival"}


def study_threshold(study: Mapping[str, Any]) -> float:
    """The study's ``validation.threshold`` (its decision threshold), else 0.5."""
    validation = study.get("validation")
    value = validation.get("threshold") if isinstance(validation, Mapping) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
        return float(value)
    return 0.5


def _statistics_source(impute: bool, scale: str, two_d: bool) -> str:
    if not two_d or not (impute or scale != "none"):
        return "none"
    return "federation" if scale == "global" else "site"


def build_bundle(
    *,
    model: Mapping[str, Any] | None,
    params: Mapping[str, np.ndarray],
    feature_names: Sequence[str],
    input_shape: Sequence[int],
    preprocessing: Mapping[str, Any],
    statistics: Mapping[str, np.ndarray] | None = None,
    task: str | None = None,
    threshold: float = 0.5,
    card: Mapping[str, Any] | None = None,
    lineage: Sequence[Mapping[str, Any]] | None = None,
    source: Mapping[str, Any] | None = None,
    monitoring: Mapping[str, Any] | None = None,
    image: Mapping[str, Any] | None = None,
) -> dict[str, bytes]:
    """The files of a bundle by name (:data:`BUNDLE_FILES`), manifest included.

    ``preprocessing`` is the plan's ``{"impute", "scale"}``; ``statistics`` the federation's
    ``mean`` and ``std`` under global scaling (ignored otherwise). What is unknown (no model
    spec, no feature names, global statistics not found) is listed under ``missing`` in
    ``bundle.json``: such a bundle loads, and :mod:`fedcare.inference.predict` refuses it
    naming what is missing. ``monitoring``: the study's alert thresholds for the deployed model
    (:class:`~fedcare.records.monitoring_spec.MonitoringSpec`), kept when given. ``image``:
    how an image model's pixels were prepared in training
    (:meth:`fedcare.data.image_input.ImageInput.to_json`), for prediction on DICOM files. A
    package model must name its package by hash (``sha256:<hex>``), else it is ``missing``.
    """
    impute = preprocessing.get("impute", "none") == "mean"
    scale = str(preprocessing.get("scale", "none"))
    shape = [int(v) for v in input_shape]
    source_kind = _statistics_source(impute, scale, len(shape) == 1)
    missing = [] if model else ["model spec"]
    if len(shape) == 1 and len(feature_names) != shape[0]:
        missing.append("feature names")
    files: dict[str, bytes] = {PARAMS: npz_bytes(dict(params))}
    if source_kind == "federation":
        if statistics is not None and "mean" in statistics and "std" in statistics:
            files[STATISTICS] = npz_bytes({k: statistics[k] for k in ("mean", "std")})
        else:
            missing.append("global scaling statistics")
    kind = (model or {}).get("kind")
    if kind == "package" and not str((model or {}).get("package", "")).startswith("sha256:"):
        missing.append("package hash (the study's package, resolved to sha256:<hex>)")
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": dict(model or {}),
        "task": task or (model or {}).get("task") or _TASKS.get(str(kind)),
        "input_shape": shape,
        "features": [str(n) for n in feature_names] if len(shape) == 1 else [],
        "preprocessing": {"impute": impute, "scale": scale, "statistics": source_kind},
        "threshold": float(threshold),
        "source": dict(source or {}),
        "missing": missing,
    }
    if monitoring is not None:
        description["monitoring"] = dict(monitoring)
    if image is not None:
        description["image"] = dict(image)
    files[DESCRIPTION] = json_bytes(description)
    if card is not None:
        files[CARD] = json_bytes(card)
    if lineage is not None:
        files[LINEAGE] = json_bytes(list(lineage))
    return with_manifest(files)


def bundle_from_study(
    study: Mapping[str, Any],
    *,
    params: Mapping[str, np.ndarray],
    task_arrays: Mapping[str, Mapping[str, np.ndarray]],
    feature_names: Sequence[str],
    input_shape: Sequence[int],
    task: str | None = None,
    card: Mapping[str, Any] | None = None,
    lineage: Sequence[Mapping[str, Any]] | None = None,
    source: Mapping[str, Any] | None = None,
) -> dict[str, bytes]:
    """The bundle of a model trained by ``study`` (its config as a dict): the study's model
    spec, preprocessing and threshold; ``task_arrays["preprocess"]`` (what every task of the
    study carried) holds the federation's statistics under global scaling; an image model
    records its dataset's image input (:func:`fedcare.data.image_input.image_input_of`)."""
    from fedcare.data.image_input import image_input_of

    model = study.get("model")
    dataset = study.get("dataset")
    image = image_input_of(dataset.get("name")) if isinstance(dataset, Mapping) else None
    prep = study.get("preprocessing")
    monitoring = study.get("monitoring")
    return build_bundle(
        model=model if isinstance(model, Mapping) else None,
        params=params,
        feature_names=feature_names,
        input_shape=input_shape,
        preprocessing=prep if isinstance(prep, Mapping) else {},
        statistics=task_arrays.get("preprocess"),
        task=task,
        threshold=study_threshold(study),
        card=card,
        lineage=lineage,
        source=source,
        monitoring=monitoring if isinstance(monitoring, Mapping) else None,
        image=image.to_json() if image is not None and len(input_shape) == 3 else None,
    )


@dataclass(frozen=True)
class ModelBundle:
    """A verified bundle, read: its description, parameters, statistics and card."""

    description: Mapping[str, Any]
    params: Mapping[str, np.ndarray]
    statistics: Mapping[str, np.ndarray] | None
    card: Mapping[str, Any] | None
    files: Mapping[str, bytes]
    #: ``sha256:<hex>`` of the manifest's content list.
    bundle_hash: str

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.description.get("model") or {})

    @property
    def task(self) -> str | None:
        task = self.description.get("task")
        return None if task is None else str(task)

    @property
    def features(self) -> list[str]:
        return [str(n) for n in self.description.get("features") or []]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.description.get("input_shape") or [])

    @property
    def threshold(self) -> float:
        return float(self.description.get("threshold", 0.5))

    @property
    def missing(self) -> list[str]:
        return [str(m) for m in self.description.get("missing") or []]

    @property
    def monitoring(self) -> dict[str, Any]:
        """The study's alert thresholds for the deployed model (``{}`` when none)."""
        return dict(self.description.get("monitoring") or {})

    @property
    def image(self) -> dict[str, Any] | None:
        """How the model's images were prepared in training (``None`` when not recorded)."""
        value = self.description.get("image")
        return dict(value) if isinstance(value, Mapping) else None

    @property
    def statistics_source(self) -> str:
        return str(self.description["preprocessing"]["statistics"])

    def preprocessing(self) -> FrozenPreprocessing:
        """The frozen preprocessing.

        Raises
        ------
        ValidationError
            If the model scales with a site's own statistics that are not frozen yet, or the
            statistics are missing or malformed.
        """
        prep = self.description["preprocessing"]
        if self.statistics_source == "none":
            return FrozenPreprocessing(False, False)
        if self.statistics_source == "site":
            raise ValidationError(
                f"the model uses each site's own statistics (scale {prep['scale']!r}, impute "
                f"{'mean' if prep['impute'] else 'none'}): freeze this site's training "
                "statistics into the bundle first (fedcare.inference.site_statistics."
                "freeze_local_statistics)"
            )
        width = self.input_shape[0] if len(self.input_shape) == 1 else -1
        return FrozenPreprocessing.from_statistics(
            bool(prep["impute"]), prep["scale"] != "none", self.statistics, width
        )


def _verify(files: Mapping[str, bytes], where: str, expected_hash: str | None) -> str:
    if MANIFEST not in files:
        raise ValidationError(f"bundle {where}: no {MANIFEST}; not a model bundle")
    try:
        manifest = json.loads(files[MANIFEST])
        listed = {e["path"]: e for e in manifest["files"]}
    except (ValueError, KeyError, TypeError) as err:
        raise ValidationError(f"bundle {where}: {MANIFEST} is malformed: {err!r}") from None
    for name in sorted(set(files) - {MANIFEST}):
        if name not in listed:
            raise ValidationError(f"bundle {where}: file {name!r} is not in its manifest")
        got = sha256_of(files[name])
        if got != listed[name]["sha256"]:
            raise ValidationError(
                f"bundle {where}: file {name!r} was changed: its SHA-256 is {got}, the "
                f"manifest says {listed[name]['sha256']}; refused"
            )
    absent = sorted(set(listed) - set(files))
    if absent:
        raise ValidationError(f"bundle {where}: file {absent[0]!r} of its manifest is missing")
    recomputed = manifest_of({n: files[n] for n in files if n != MANIFEST})["bundle_sha256"]
    if manifest.get("bundle_sha256") != recomputed:
        raise ValidationError(
            f"bundle {where}: {MANIFEST}'s bundle_sha256 does not match its files"
        )
    if expected_hash is not None and recomputed != expected_hash:
        raise ValidationError(
            f"bundle {where} has hash {recomputed}, expected {expected_hash}; refused"
        )
    return str(recomputed)


def verify_files(files: Mapping[str, bytes], where: str, expected_hash: str | None = None) -> str:
    """Check bundle ``files`` (by name) against their manifest; return the bundle's hash.

    Raises
    ------
    ValidationError
        A file changed, missing or not in the manifest (names it), or the hash is not
        ``expected_hash``.
    """
    unknown = sorted(n for n in files if n not in BUNDLE_FILES)
    if unknown:
        raise ValidationError(f"bundle {where}: file {unknown[0]!r} is not in its manifest")
    return _verify(files, where, expected_hash)


def load_bundle(path: Path, *, expected_hash: str | None = None) -> ModelBundle:
    """Read and verify the bundle at ``path`` (a folder or a zip).

    Raises
    ------
    ValidationError
        A file changed, missing or not in the manifest (names it), the bundle's hash is not
        ``expected_hash``, or ``bundle.json`` is of another format.
    ConfigError
        ``path`` is not a bundle folder or zip.
    """
    files = read_bundle_files(Path(path))
    digest = _verify(files, str(path), expected_hash)
    description = json.loads(files[DESCRIPTION]) if DESCRIPTION in files else {}
    if description.get("format") != FORMAT or description.get("format_version") != 1:
        raise ValidationError(
            f"bundle {path}: {DESCRIPTION} is not a {FORMAT} version {FORMAT_VERSION} "
            "(an export of an older fedcare? export it again)"
        )
    return ModelBundle(
        description=description,
        params=read_npz(files[PARAMS], PARAMS),
        statistics=read_npz(files[STATISTICS], STATISTICS) if STATISTICS in files else None,
        card=json.loads(files[CARD]) if CARD in files else None,
        files=files,
        bundle_hash=digest,
    )
