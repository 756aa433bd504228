"""Site middleware for privacy mode ``encrypted``: encrypts ``fit`` replies, decrypts sums.

For a ``fit`` task whose pipeline has an ``he`` spec, :class:`HEMod` lets training run, then
replaces the update with CKKS ciphertexts of ``[w * delta, w]`` (``w`` = samples /
``weight_unit``), encrypted with the federation key from the site's kit. For a ``secagg`` task
with ``he_stage=decrypt`` it decrypts the encrypted sum the coordinator sends and returns it.
The secret context comes from the kit (``he_secret.ctx``); only a simulated site
(``simulated=True``, set by the simulation) uses the process's simulated federation keys.
Both stages first check that the task's key fingerprint is this site's.

In a deployed site the pipeline this layer reads is the one the site derived from the
approved plan (:func:`fedcare.site.plans.expected_pipeline`): governance refuses a ``fit`` task
whose own pipeline differs and passes on the derived one, so the coordinator cannot switch
this layer off or weaken it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedcare.errors import ConfigError, ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.secure.he.base import HEBackend
from fedcare.secure.he.layer import SPEC_VERSION, ciphertext_record, ciphertexts_of
from fedcare.site.secagg import weighted_vector

__all__ = ["HEMod"]

Handler = Callable[[Task], Reply]


class HEMod:
    """``mod(task, next_handler) -> Reply`` for one site (place it outside ``SecAggMod``)."""

    def __init__(
        self, site_id: str, secret_path: Path | None = None, *, simulated: bool = False
    ) -> None:
        self.site_id = site_id
        self.secret_path = secret_path
        self.simulated = simulated
        self._backend: HEBackend | None = None

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        if task.kind == "secagg" and task.config.get("he_stage") == "decrypt":
            return self._decrypt(task)
        if task.kind == "fit" and "he" in task.pipeline:
            return self._encrypt(task, next_handler)
        return next_handler(task)

    def backend(self) -> HEBackend:
        """This site's secret context, loaded once."""
        if self._backend is None:
            from fedcare.secure.he.ckks import CKKSBackend
            from fedcare.secure.he.keys import simulation_keys, site_context

            if self.secret_path is not None:
                self._backend = site_context(self.secret_path)
            elif self.simulated:
                self._backend = CKKSBackend.from_bytes(simulation_keys()[0])
            else:
                raise ConfigError(
                    f"site {self.site_id!r} has no HE secret context (he_secret.ctx in its kit); "
                    "the federation must be provisioned with --he for privacy mode 'encrypted'"
                )
        return self._backend

    def _check_fingerprint(self, fingerprint: object) -> HEBackend:
        backend = self.backend()
        if fingerprint != backend.fingerprint():
            raise ValidationError(
                f"site {self.site_id!r}: the study's HE key fingerprint {fingerprint!r} is not "
                f"this site's ({backend.fingerprint()!r}); the coordinator and this site were "
                "provisioned with different keys"
            )
        return backend

    def _encrypt(self, task: Task, next_handler: Handler) -> Reply:
        spec = task.pipeline["he"]
        if not isinstance(spec, Mapping) or spec.get("version") != SPEC_VERSION:
            raise ValidationError(
                f"pipeline he spec {spec!r}: this site speaks version {SPEC_VERSION}"
            )
        backend = self._check_fingerprint(spec.get("fingerprint"))
        reply = next_handler(task)
        if not reply.ok:
            return reply
        unit = float(spec.get("weight_unit", 1000.0))
        vector = weighted_vector(reply.arrays, float(reply.num_samples) / unit)
        arrays = ciphertext_record(backend.encrypt(vector))
        return replace(reply, arrays=arrays, num_samples=0)  # the weight travels encrypted

    def _decrypt(self, task: Task) -> Reply:
        backend = self._check_fingerprint(task.config.get("he_fingerprint"))
        length = task.config.get("he_length")
        if not isinstance(length, int) or length < 1:
            raise ValidationError(f"task config he_length must be a positive int, got {length!r}")
        try:
            cts = ciphertexts_of(task.arrays.get("he", ArrayRecord()))
        except Exception as err:
            raise ValidationError(f"decrypt task: {err}") from None
        total = backend.decrypt(cts, length)
        return Reply(
            study_id=task.study_id,
            round=task.round,
            site_id=task.site_id,
            kind=task.kind,
            arrays=ArrayRecord({"sum": np.asarray(total, dtype=np.float64)}),
            num_samples=0,
        )
