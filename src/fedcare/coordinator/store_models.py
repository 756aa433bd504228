"""The model registry: register a study's final model with its card; list, read, trace lineage.

A version id is derived from the study id and round (:func:`model_version_id`), so a runner
that registers the same final model again after a crash gets a :class:`ConflictError` and can
read the existing version instead. The parameters are an artifact (content-addressed) written
before the row, so no row ever points at a missing artifact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fedcare.coordinator.db import ModelRow
from fedcare.coordinator.jsonsafe import to_json
from fedcare.coordinator.rows import ModelInfo, snapshot
from fedcare.coordinator.store_base import StoreBase, check_id, check_int
from fedcare.errors import ConflictError, NotFoundError, ValidationError

if TYPE_CHECKING:
    from fedcare.records.arrays import ArrayRecord

__all__ = ["ModelsMixin", "model_version_id"]

MODEL_HASH_MAX = 80


def model_version_id(study_id: str, round: int) -> str:
    """The registry version id of ``study_id``'s model after ``round``: ``m-<16 hex>``."""
    return "m-" + hashlib.sha256(f"{study_id}/{round}".encode()).hexdigest()[:16]


def _not_found(version: str) -> NotFoundError:
    return NotFoundError(f"no model version {version!r} in the registry")


class ModelsMixin(StoreBase):
    """Register models and read them back."""

    def register_model(
        self,
        study_id: str,
        round: int,
        *,
        params: bytes | None = None,
        params_digest: str | None = None,
        model_hash: str,
        card: Mapping[str, Any],
        parent: str | None = None,
        created_at: datetime | None = None,
    ) -> ModelInfo:
        """Add the model of ``study_id`` after ``round`` (params stored as an artifact).

        ``params`` are the encoded parameters, stored now; or ``params_digest`` names an
        artifact already stored (the round's checkpoint: the same bytes, not written again).

        Raises
        ------
        NotFoundError
            If the study or the ``parent`` version does not exist (names it).
        ConflictError
            If this study's model of ``round`` is already registered; nothing changes.
        ValidationError
            If an argument is malformed.
        """
        check_int(round, "round")
        check_id(model_hash, "model_hash", max_len=MODEL_HASH_MAX)
        if parent is not None:
            check_id(parent, "parent")
        if (params is None) == (params_digest is None):
            raise ValidationError("give exactly one of params (bytes) and params_digest")
        if params is not None and not isinstance(params, bytes):
            raise ValidationError(f"params must be bytes, got {type(params).__name__}")
        if params_digest is not None and not self.artifacts.exists(params_digest):
            raise NotFoundError(f"no stored artifact {params_digest} to register as a model")
        version = model_version_id(study_id, round)
        stored = to_json(card, f"model card of study {study_id!r}")
        with self._tx(write=False) as s:  # refuse before writing the artifact
            self._check_new(s, study_id, version, parent)
        row = ModelRow(
            version=version,
            study_id=study_id,
            round=round,
            artifact_digest=params_digest if params is None else self.artifacts.put(params),
            model_hash=model_hash,
            parent=parent,
            card=stored,
            created_at=created_at or self._now(),
        )
        try:
            with self._tx(write=True) as s:
                self._check_new(s, study_id, version, parent)
                s.add(row)
        except IntegrityError as err:
            raise ConflictError(f"model version {version!r} is already registered") from err
        return snapshot(ModelInfo, row)

    def _check_new(self, s: Any, study_id: str, version: str, parent: str | None) -> None:
        self._study(s, study_id)
        if s.get(ModelRow, version) is not None:
            raise ConflictError(
                f"model version {version!r} (study {study_id!r}) is already registered"
            )
        if parent is not None and s.get(ModelRow, parent) is None:
            raise NotFoundError(f"parent model version {parent!r} is not in the registry")

    def get_model(self, version: str) -> ModelInfo:
        """The registered version ``version``; NotFoundError naming it if there is none."""
        with self._tx(write=False) as s:
            row = s.get(ModelRow, version)
            if row is None:
                raise _not_found(version)
            return snapshot(ModelInfo, row)

    def list_models(self, study_id: str | None = None) -> list[ModelInfo]:
        """Every registered version (or those of ``study_id``), oldest first."""
        stmt = select(ModelRow).order_by(ModelRow.created_at, ModelRow.version)
        if study_id is not None:
            stmt = stmt.where(ModelRow.study_id == study_id)
        with self._tx(write=False) as s:
            return [snapshot(ModelInfo, r) for r in s.scalars(stmt)]

    def lineage(self, version: str) -> list[ModelInfo]:
        """``version``, its parent, the parent's parent, ... up to a model with no parent."""
        chain: list[ModelInfo] = []
        current: str | None = version
        while current is not None:
            if any(m.version == current for m in chain):
                raise ConflictError(f"model lineage of {version!r} has a cycle at {current!r}")
            chain.append(self.get_model(current))
            current = chain[-1].parent
        return chain

    def model_params(self, version: str) -> bytes:
        """The encoded parameters of ``version`` (verified against their digest)."""
        return self.artifacts.get(self.get_model(version).artifact_digest)

    def mapped_params(self, digest: str) -> ArrayRecord:
        """The checkpoint ``digest``'s params, verified, as read-only views of its mapped file
        (no copy; also a record beyond protobuf's 2 GiB, which its parser refuses)."""
        from fedcare.transport.arrays_mapped import read_arrays  # numpy: not for every command

        self.artifacts.verify(digest)  # one buffered pass; raises ArtifactCorruptError
        return read_arrays(self.artifacts.map(digest))

    def model_arrays(self, version: str) -> ArrayRecord:
        """The parameters of ``version`` as :meth:`mapped_params` gives them."""
        return self.mapped_params(self.get_model(version).artifact_digest)
