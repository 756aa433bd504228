"""A ``fit`` task's local-training config, read into a :class:`LocalTrainSpec`.

Both sides of a federation read it: a site to train (``fedcare.site.runtime``) and to account
its DP-SGD spend before training (``fedcare.site.ledger``), the coordinator to compute the
spend a secure sum hides (``fedcare.coordinator.privacy_guard``), and the simulation. It is
core, so the coordinator and the site share it without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedcare.errors import ConfigError
from fedcare.models.base import LocalTrainSpec
from fedcare.privacy.dp_sgd import CONFIG_KEYS as DP_SGD_KEYS
from fedcare.privacy.dp_sgd import dp_spec_from_config
from fedcare.records.messages import Scalar

__all__ = ["SPEC_KEYS", "TASK_KEYS", "spec_from_config"]

#: Task config keys that set :class:`LocalTrainSpec` fields.
SPEC_KEYS = ("epochs", "max_steps", "lr", "batch_size", "optimizer", "momentum", "l2", "prox_mu")
#: Task config keys a site reads beside them (the local algorithm and the task seed).
TASK_KEYS = ("algorithm", "seed")


def spec_from_config(config: Mapping[str, Scalar]) -> LocalTrainSpec:
    """The local training spec from a task's config; unknown keys are an error."""
    unknown = sorted(set(config) - set(SPEC_KEYS) - set(TASK_KEYS) - set(DP_SGD_KEYS))
    if unknown:
        raise ConfigError(f"task config has unknown keys {unknown}; known: {SPEC_KEYS + TASK_KEYS}")
    kwargs: dict[str, Any] = {k: config[k] for k in SPEC_KEYS if k in config}
    if kwargs.get("max_steps") in (0, None):
        kwargs.pop("max_steps", None)
    if kwargs.get("batch_size") in (0, None):
        kwargs.pop("batch_size", None)
    return LocalTrainSpec(**kwargs, dp=dp_spec_from_config(config))
