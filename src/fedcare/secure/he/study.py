"""Privacy mode ``encrypted`` as a preset: wrap a study's strategy in an encrypted sum."""

from __future__ import annotations

from typing import Any

from fedcare.aggregation.presets import needs_each_update
from fedcare.errors import ConfigError
from fedcare.secure.he.base import HEBackend
from fedcare.secure.he.layer import with_encrypted_sum

__all__ = ["encrypted_study_strategy"]


def encrypted_study_strategy(strategy: Any, study: Any, context: HEBackend | None) -> Any:
    """``strategy`` with its aggregator wrapped in an :class:`EncryptedSum`.

    Parameters
    ----------
    strategy:
        The study's plain strategy.
    study:
        The :class:`~fedcare.records.study.StudyConfig` (its name and aggregation layers).
    context:
        The coordinator's PUBLIC context (from its kit). ``None``: the simulated federation's
        public context (simulation only; a deployed site with kit keys then refuses the
        study because the key fingerprints differ).

    Raises
    ------
    ConfigError
        If the study combines encryption with a robust layer that needs each update, or the
        context holds the secret key.
    """
    needs_each = needs_each_update(study.aggregation)
    if needs_each:  # robust means need each update; the coordinator sees only ciphertexts
        raise ConfigError(
            f"study {study.name!r}: privacy mode 'encrypted' cannot combine with robust "
            f"aggregation layer(s) {needs_each}, which need each site's update in plaintext"
        )
    if context is None:
        from fedcare.secure.he.ckks import CKKSBackend
        from fedcare.secure.he.keys import simulation_keys

        context = CKKSBackend.public_from_bytes(simulation_keys()[1])
    return with_encrypted_sum(strategy, {}, context)
