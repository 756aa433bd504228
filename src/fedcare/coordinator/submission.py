"""What is checked when a study is submitted, so a study that cannot run is refused at once.

:func:`check_submission` runs before a study is queued (``fedcare study submit``) and raises
the error the study would otherwise fail with later, at the coordinator:

* the privacy mode is available in this version (and mode ``private`` has its DP settings);
* the strategy is known and its options, the aggregation layers and the privacy mode compose
  (the same :func:`~fedcare.strategy.driver.study_strategy` the runner builds);
* the study's first round fits its ``privacy.epsilon``
  (:func:`~fedcare.privacy.guard.guard_next_round`, the guard every round passes);
* the model kind is known to the model registry and its options are valid
  (:func:`~fedcare.models.registry.build_model`);
* ``init_model`` names a version in the coordinator's model registry whose model kind is the
  study's, and, where the registered sites have described the study's dataset with one input
  shape, whose parameters have the shapes the study's model has on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcare.coordinator.store import CoordinatorStore
from fedcare.errors import ConfigError, NotFoundError, ValidationError
from fedcare.models.registry import build_model
from fedcare.privacy.guard import guard_next_round
from fedcare.records.study import StudyConfig
from fedcare.strategy.driver import check_privacy_mode, study_strategy
from fedcare.transport.codec import decode_arrays

__all__ = ["check_submission"]


def check_submission(store: CoordinatorStore, study: StudyConfig) -> None:
    """Refuse a study that would fail after submission.

    Raises
    ------
    ConfigError
        Naming the unavailable mode, unknown strategy or model kind, bad option, or the
        ``init_model`` that is not registered or does not fit the study's model.
    PrivacyBudgetError
        If round 1 alone would take the study's epsilon past ``privacy.epsilon``.
    ModelError
        For ``kind: torch`` where PyTorch is not installed at the coordinator.
    """
    check_privacy_mode(study)
    num_sites = max(1, study.min_sites)
    if study.privacy.mode == "encrypted":  # its keys are the coordinator's, checked at start
        plain = study.with_overrides(privacy={**study.privacy.model_dump(), "mode": "open"})
        study_strategy(plain, num_sites)
    else:
        study_strategy(study, num_sites)
    guard_next_round("at submission", study, [], 1)
    adapter = build_model(study.model)
    if study.init_model is not None:
        _check_init_model(store, study, adapter)


def _check_init_model(store: CoordinatorStore, study: StudyConfig, adapter: Any) -> None:
    version = study.init_model
    assert version is not None
    try:
        info = store.get_model(version)
    except NotFoundError:
        known = [m.version for m in store.list_models()]
        raise ConfigError(
            f"init_model {version!r} is not a registered model version "
            f"(registered: {', '.join(known) if known else 'none'})"
        ) from None
    config = info.card.get("config") if isinstance(info.card, dict) else None
    model = config.get("model") if isinstance(config, dict) else None
    kind = model.get("kind") if isinstance(model, dict) else None
    if kind is not None and kind != study.model.get("kind"):
        raise ConfigError(
            f"init_model {version!r} is a {kind!r} model; the study's model is "
            f"{study.model.get('kind')!r}"
        )
    shape = _input_shape(store, study.dataset.name)
    if shape is None:
        return  # no site has described the dataset yet: checked when the study starts
    like = adapter.init_params(shape, np.random.default_rng(0))
    try:
        like.check_structure(
            decode_arrays(store.model_params(version)), what=f"init_model {version!r}"
        )
    except ValidationError as err:
        raise ConfigError(
            f"{err}; the study's model on {study.dataset.name!r} (input shape {shape}) does not "
            "fit the registered model"
        ) from None


def _input_shape(store: CoordinatorStore, dataset: str) -> tuple[int, ...] | None:
    """The input shape the active sites described for ``dataset`` (None unless they agree)."""
    shapes = set()
    for site in store.list_sites("active"):
        described = (site.datasets or {}).get(dataset)
        if isinstance(described, dict) and described.get("input_shape"):
            shapes.add(tuple(int(n) for n in described["input_shape"]))
    return shapes.pop() if len(shapes) == 1 else None
