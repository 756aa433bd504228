"""What ``fedcare models export`` writes for a registered model, as bytes: shared by the
command (which writes the files into a folder) and the HTTP API (which sends them as one zip
archive, ``GET /api/v1/models/{version}/download``), so both hand out the same files.

- ``model_card.json``: the model card (sorted keys, indented);
- ``lineage.json``: the version and its ancestors, newest first (version, study, model hash);
- ``params.npz``: the parameters, one array per name (``numpy.load`` reads it). Written with
  fixed entry times, so the same model always gives the same bytes.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Collection, Mapping

from fedcare.coordinator.rows import ModelInfo
from fedcare.coordinator.store import CoordinatorStore

__all__ = ["EXPORT_FILES", "descendants", "export_files", "export_zip", "lineage_entries"]

#: The files of an export, in the order they are written.
EXPORT_FILES = ("model_card.json", "lineage.json", "params.npz")
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


def _npz(arrays: Mapping[str, object]) -> bytes:
    """An ``.npz`` archive of ``arrays`` as ``numpy.savez`` lays it out, with fixed times."""
    import numpy as np

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            with archive.open(entry, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return buffer.getvalue()


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
    from fedcare.transport.codec import decode_arrays

    chain = store.lineage(version)
    params = decode_arrays(store.model_params(version))
    card = json.dumps(chain[0].card, indent=2, sort_keys=True) + "\n"
    lineage = json.dumps(lineage_entries(chain, hidden), indent=2) + "\n"
    return {
        "model_card.json": card.encode(),
        "lineage.json": lineage.encode(),
        "params.npz": _npz(dict(params)),
    }


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
