"""A site's personalized model: trained and kept here, only its test metrics leave.

The study's ``personalization`` section (:mod:`fedcare.records.personalization_spec`) travels
in the approved plan. :class:`fedcare.site.runtime.SiteRuntime` calls this module:

* ``ditto``: :func:`ditto_step` trains the site's own model ``v_k`` in every fit task, from
  its previous ``v_k`` towards the round's global model ``w`` (proximal weight ``lam``);
* ``fedbn``: :func:`fedbn_start` puts the site's own batch-normalization arrays into the global
  params before training, :func:`fedbn_split` zeroes their change in the update that leaves
  and keeps the new ones;
* ``finetune``: :func:`finetune` trains the final global model further on the training rows
  (with ``validation_share``: early-stopped on a held-out share of them);
* every method: :func:`personal_metrics` (``personal_`` + the metric names) on the test rows.

What a site keeps across rounds (``v_k``, or the normalization arrays) is a
:class:`PersonalState`, saved under the runtime's ``state_dir`` like SCAFFOLD's control
variates, so a restarted site agent continues where it was. Nothing of it is ever put in a
reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ConfigError, ModelError
from fedcare.evaluation.metrics import compute_metrics
from fedcare.evaluation.personal import PERSONAL_PREFIX
from fedcare.models.base import LocalTrainSpec, ModelAdapter
from fedcare.records.arrays import ArrayRecord
from fedcare.site.round_state import RoundStateStore, for_round

__all__ = [
    "PERSONAL_PREFIX",
    "PersonalState",
    "PersonalStore",
    "ditto_step",
    "fedbn_keys",
    "fedbn_split",
    "fedbn_start",
    "finetune",
    "holdout_rows",
    "personal_method",
    "personal_metrics",
    "personal_train_spec",
]


def personal_method(plan: Mapping[str, Any]) -> str:
    """The plan's personalization method (``"none"`` when the plan has no such section)."""
    section = plan.get("personalization")
    if not isinstance(section, Mapping) or not section:
        return "none"
    method = str(section.get("method", "none"))
    if method != "none" and plan.get("privacy_mode") == "private":
        raise ConfigError(
            f"personalization {method!r} in privacy mode 'private': a personal model trains "
            "without DP noise, so its metrics would fall outside the study's epsilon"
        )
    return method


def personal_train_spec(
    base: LocalTrainSpec, section: Mapping[str, Any], *, default_epochs: int | None
) -> LocalTrainSpec:
    """The local training of the personal model: the study's settings ``base`` without the
    federated algorithm's terms (FedProx, SCAFFOLD), with the section's ``lr`` and ``epochs``
    (``default_epochs`` when it sets none; ``None``: the study's own schedule).

    Raises
    ------
    ConfigError
        ``base`` trains by DP-SGD (the study refuses that combination; a site re-checks), or
        ``epochs`` is below 1.
    """
    if base.dp is not None:
        raise ConfigError(
            "personalization with DP-SGD: the personal model would train without DP noise and "
            "its metrics fall outside the study's epsilon"
        )
    spec = replace(base, correction=None, prox_mu=0.0)
    epochs = section.get("epochs")
    epochs = default_epochs if epochs is None else epochs
    if epochs is not None:
        if int(epochs) < 1:
            raise ConfigError(f"personalization epochs must be >= 1, got {epochs}")
        spec = replace(spec, epochs=int(epochs), max_steps=None)
    if section.get("lr"):
        spec = replace(spec, lr=float(section["lr"]))
    return spec


def finetune(
    adapter: ModelAdapter,
    params: ArrayRecord,
    train: Dataset,
    spec: LocalTrainSpec,
    rng: np.random.Generator,
    *,
    validation_share: float | None = None,
) -> ArrayRecord:
    """``params`` trained further on ``train`` as ``spec`` says (the fine-tuned model).

    With ``validation_share``, early stopping as FL4Health checkpoints its personal models: a
    stratified share of ``train`` is held out, the rest trains one pass at a time for up to
    ``spec.epochs`` passes, and the checkpoint with the lowest loss on the held-out rows is
    kept; checkpoint 0 is ``params`` itself, so a site whose rows do not improve the federated
    model keeps it (ties keep the earlier checkpoint).

    Raises
    ------
    ModelError
        ``train`` is too small to hold out a row and keep one to train on.
    """
    if validation_share is None:
        return adapter.fit(params, train, spec, rng).params
    held = holdout_rows(np.asarray(train.y), validation_share, rng)
    kept = np.setdiff1d(np.arange(len(train)), held)
    if len(held) == 0 or len(kept) == 0:
        raise ModelError(
            f"personalization validation_share {validation_share}: {len(train)} training rows "
            "leave no held-out or no training row"
        )
    fit, val = train.take(kept), train.take(held)
    one_pass = replace(spec, epochs=1, max_steps=None)
    best, best_loss, current = params, adapter.loss(params, val), params
    for _ in range(spec.epochs):
        current = adapter.fit(current, fit, one_pass, rng).params
        loss = adapter.loss(current, val)
        if loss < best_loss:
            best, best_loss = current, loss
    return best


def holdout_rows(y: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``round(share * n_c)`` rows of each label value ``c`` (each class
    of a classification task, the event indicator of a survival one); a continuous or
    multilabel ``y`` is drawn unstratified."""
    n = len(y)
    if y.ndim != 1 or len(np.unique(y)) > max(20, n // 2):
        return np.sort(rng.permutation(n)[: int(np.floor(share * n + 0.5))])
    held: list[int] = []
    for value in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == value))
        held.extend(members[: int(np.floor(share * len(members) + 0.5))].tolist())
    return np.array(sorted(held), dtype=np.int64)


def ditto_step(
    adapter: ModelAdapter,
    personal: ArrayRecord,
    global_params: ArrayRecord,
    train: Dataset,
    spec: LocalTrainSpec,
    lam: float,
    rng: np.random.Generator,
) -> ArrayRecord:
    """One round of Ditto's personal objective ``F_k(v) + lam/2 ||v - w||^2`` from ``personal``.

    The adapters' proximal term is centred on the starting params, so the term towards ``w``
    is written as that term plus a constant: ``lam (v - w) = lam (v - v_0) + lam (v_0 - w)``
    (``prox_mu = lam`` and the constant as the gradient ``correction``), exactly Ditto's
    gradient for any adapter that supports FedProx and SCAFFOLD.
    """
    if lam:
        shift = (personal - global_params).scale(lam)
        spec = replace(spec, prox_mu=lam, correction=shift)
    return adapter.fit(personal, train, spec, rng).params


def fedbn_keys(params: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """The arrays of batch-normalization layers: every array of a module that has running
    statistics (``<module>.running_mean``): its weight, bias and statistics.

    Raises
    ------
    ConfigError
        When there is none: FedBN has nothing to keep local.
    """
    modules = {k.rsplit(".", 1)[0] for k in params if k.endswith(".running_mean")}
    keys = tuple(k for k in params if "." in k and k.rsplit(".", 1)[0] in modules)
    if not keys:
        raise ConfigError(
            "personalization fedbn: the model has no batch-normalization layers (no "
            "'<layer>.running_mean' array); use finetune or ditto"
        )
    return keys


def fedbn_start(global_params: ArrayRecord, local: ArrayRecord | None) -> ArrayRecord:
    """The global params with this site's own normalization arrays, when it has them."""
    if local is None:
        return global_params
    return ArrayRecord({k: local.get(k, v) for k, v in global_params.items()}, copy=False)


def fedbn_split(
    delta: ArrayRecord, trained: ArrayRecord, keys: tuple[str, ...]
) -> tuple[ArrayRecord, ArrayRecord]:
    """``(the update with no change to the normalization arrays, the site's new ones)``."""
    kept = set(keys)
    update = {k: np.zeros_like(v) if k in kept else v for k, v in delta.items()}
    return ArrayRecord(update, copy=False), ArrayRecord({k: trained[k] for k in keys})


def personal_metrics(adapter: ModelAdapter, params: ArrayRecord, data: Dataset) -> dict[str, float]:
    """The personal model's metrics on the test rows ``data``, as ``personal_<metric>``."""
    scores = adapter.predict(params, data.X)
    metrics = {**compute_metrics(adapter.task, data, scores), "loss": adapter.loss(params, data)}
    return {PERSONAL_PREFIX + k: float(v) for k, v in metrics.items() if k != "n"}


@dataclass(frozen=True)
class PersonalState:
    """What a site keeps of its personal model around its last training round.

    As with SCAFFOLD's control variates, the value from before that round makes a retried
    round start from the same state as the first attempt.
    """

    round: int
    before: ArrayRecord | None
    after: ArrayRecord

    def for_round(self, round: int) -> ArrayRecord | None:
        """The state a fit task of ``round`` starts from."""
        return for_round(self, round, "personal model")

    @staticmethod
    def start(state: PersonalState | None, round: int) -> ArrayRecord | None:
        """What a fit task of ``round`` starts from given the saved ``state`` (if any)."""
        return None if state is None else state.for_round(round)


class PersonalStore(RoundStateStore[PersonalState]):
    """Per-study personal state, in memory and (with ``state_dir``) on disk."""

    def __init__(self, state_dir: Path | None = None) -> None:
        super().__init__(state_dir, "personal", PersonalState)
