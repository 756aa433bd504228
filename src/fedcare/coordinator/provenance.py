"""Provenance at the coordinator: register a finished study's model, start one from a model.

The runner registers the **final** model of every completed study (not every checkpoint: each
round's parameters are already content-addressed checkpoints in the ``rounds`` table, and the
registry is for models people use). The card is built by the pure
:func:`fedcare.evaluation.model_card.build_model_card` from the study's stored round records.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import numpy as np

from fedcare.coordinator.results import study_results
from fedcare.coordinator.rows import ModelInfo
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.store_models import model_version_id
from fedcare.errors import ConfigError, FedcareError, NotFoundError, ValidationError
from fedcare.evaluation.model_card import build_model_card
from fedcare.records.arrays import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.strategy.base import Strategy
from fedcare.strategy.driver import StudyStart, round_config

__all__ = ["register_final_model", "start_from_model"]


def register_final_model(
    store: CoordinatorStore, study_id: str, study: StudyConfig
) -> tuple[ModelInfo, bool]:
    """Register the study's last checkpoint as a model: ``(model, newly_registered)``.

    Idempotent: if the final model is already registered (a runner resumed after a crash),
    the stored version is returned with ``False``.
    """
    last = store.last_round_digests(study_id)
    if last is None:
        raise FedcareError(f"study {study_id!r} has no completed round to register")
    round_, params_digest, _ = last
    version = model_version_id(study_id, round_)
    try:
        return store.get_model(version), False
    except NotFoundError:
        pass
    from fedcare._version import __version__

    results = study_results(store, study_id)
    created = datetime.now(timezone.utc)
    card = build_model_card(
        study=study.model_dump(mode="json"),
        study_id=study_id,
        plan=round_config(study, study_id).plan,
        history=results["history"],
        final=results["final"],
        # read in place (verified first): a large model is hashed, never copied
        params=store.mapped_params(params_digest),
        created=created,
        fedcare_version=__version__,
        version=version,
        parent=study.init_model,
        # the final evaluation's clinical validation (coefficients need the registered model,
        # so they are not in it yet) fills the card's TRIPOD+AI block
        validation=(results.get("validation") or {}).get("federated"),
        dataset={"name": study.dataset.name},
        task=results.get("task"),
    )
    model = store.register_model(
        study_id,
        round_,
        params_digest=params_digest,  # the round's checkpoint: the same bytes
        model_hash=card["model"]["hash"],
        card=card,
        parent=study.init_model,
        created_at=created,
    )
    return model, True


def start_from_model(
    store: CoordinatorStore, version: str, strategy: Strategy, start: StudyStart
) -> StudyStart:
    """``start`` with the parameters of registered model ``version`` (continuous learning).

    Raises
    ------
    NotFoundError
        If ``version`` is not in the registry (names it).
    ConfigError
        If the registered parameters do not fit the study's model (names the array).
    """
    params = store.model_arrays(version)
    like = start.state.params
    try:
        like.check_structure(params, what=f"init_model {version!r}")
    except ValidationError as err:
        raise ConfigError(f"{err}; the study's model does not fit the registered model") from None
    if list(params) != list(like):
        params = ArrayRecord({k: params[k] for k in like}, copy=False)
    cast = ArrayRecord({k: np.asarray(params[k], dtype=like[k].dtype) for k in like})
    return replace(start, state=strategy.init_state(cast))
