"""What ``fedcare models export`` writes for a registered model, as bytes: shared by the
command (which writes the files into a folder) and the HTTP API (which sends them as one zip
archive, ``GET /api/v1/models/{version}/download``), so both hand out the same files.

The files are a model bundle (:mod:`fedcare.inference.bundle`):

- ``model_card.json``: the model card (sorted keys, indented);
- ``lineage.json``: the version and its ancestors, newest first (version, study, model hash);
- ``params.npz``: the parameters, one array per name (``numpy.load`` reads it). Written with
  fixed entry times, so the same model always gives the same bytes;
- ``bundle.json``: the study's model spec, task, input shape, feature names in order (the
  study's reference feature schema, kept in its round-0 record), preprocessing and decision
  threshold (the study's ``validation.threshold``);
- ``preprocess.npz``: under global scaling, the federation's ``mean`` and ``std`` that every
  task of the study carried (kept in each round's checkpoint: ``task/preprocess/*``);
- ``manifest.json``: SHA-256 of every file and the bundle's hash.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Collection, Mapping
from typing import Any

from fedcare.coordinator.rows import ModelInfo
from fedcare.coordinator.store import CoordinatorStore
from fedcare.errors import NotFoundError
from fedcare.inference.bundle import BUNDLE_FILES, bundle_from_study

__all__ = ["EXPORT_FILES", "descendants", "export_files", "export_zip", "lineage_entries"]

#: The files of an export, in the order they are written (``preprocess.npz`` only when the
#: study scaled with the federation's statistics).
EXPORT_FILES = BUNDLE_FILES
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


def lineage_entries(
    chain: list[ModelInfo], hidden: Collection[str] = ()
) -> list[dict[str, str | None]]:
    """``lineage.json``: each version of ``chain`` (newest first) with its study and model
    hash; a version in ``hidden`` (another person's study) keeps only its version."""
    return [
        {
            "version": m.version,
            "study_id": None if m.version in hidden else m.study_id,
            "model_hash": None if m.version in hidden else m.model_hash,
        }
        for m in chain
    ]


def _study_context(store: CoordinatorStore, model: ModelInfo) -> dict[str, Any]:
    """What the coordinator kept of the study behind ``model``: its config, the task arrays
    of the model's round (the global statistics), the reference feature schema (round 0)."""
    from fedcare.transport.arrays_mapped import read_arrays

    arrays: dict[str, dict[str, Any]] = {}
    schema: dict[str, Any] = {}
    try:
        digest = store.get_round(model.study_id, model.round).state_digest
        store.artifacts.verify(digest)  # one buffered pass; then read in place, not copied
        checkpoint = read_arrays(store.artifacts.map(digest))
        for key in checkpoint:
            if key.startswith("task/"):
                _, name, array = key.split("/", 2)
                arrays.setdefault(name, {})[array] = checkpoint[key]
        schema = store.get_round(model.study_id, 0).record.get("schema") or {}
    except NotFoundError:
        pass  # a model registered without its rounds (tests, an imported registry)
    config = store.get_study(model.study_id).config
    return {"study": config, "task_arrays": arrays, "schema": schema}


def export_files(
    store: CoordinatorStore, version: str, hidden: Collection[str] = ()
) -> dict[str, bytes]:
    """The files of ``fedcare models export VERSION`` by name (:data:`EXPORT_FILES`).

    ``hidden``: ancestor versions whose study and hash ``lineage.json`` leaves out.

    Raises
    ------
    NotFoundError
        If ``version`` (or an ancestor) is not in the registry.
    """
    chain = store.lineage(version)
    model = chain[0]
    params = dict(store.model_arrays(version))
    context = _study_context(store, model)
    schema = context["schema"]
    names = [str(c.get("name")) for c in schema.get("columns") or [] if isinstance(c, dict)]
    shape = schema.get("input_shape")
    if not isinstance(shape, list):  # no schema kept: the width of a linear model's weight
        weight = params.get("weight")
        shape = [int(weight.shape[0])] if weight is not None and weight.ndim == 1 else []
    return bundle_from_study(
        context["study"],
        params=params,
        task_arrays=context["task_arrays"],
        feature_names=names,
        input_shape=shape,
        card=model.card,
        lineage=lineage_entries(chain, hidden),
        source={
            "study_id": model.study_id,
            "version": model.version,
            "round": model.round,
            "model_hash": model.model_hash,
        },
    )


def export_zip(files: Mapping[str, bytes]) -> bytes:
    """The export ``files`` in one zip archive (fixed times: the same files, the same bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=_EPOCH), data)
    return buffer.getvalue()


def descendants(models: list[ModelInfo], version: str) -> list[ModelInfo]:
    """The models built on ``version``, directly or further down, oldest first."""
    children: dict[str, list[ModelInfo]] = {}
    for m in models:
        if m.parent is not None:
            children.setdefault(m.parent, []).append(m)
    out: list[ModelInfo] = []
    todo, seen = [version], {version}
    while todo:
        for child in children.get(todo.pop(0), []):
            if child.version not in seen:
                seen.add(child.version)
                out.append(child)
                todo.append(child.version)
    return sorted(out, key=lambda m: (m.created_at, m.version))
