"""Site middleware that turns a simulated site malicious, for robustness tests and benchmarks.

Each attack is a site mod (``mod(task, next_handler) -> Reply``, see
:mod:`fedcare.site.app`) that lets the honest site train and then tampers with its fit reply.
A fit reply carries the site's model *delta* (``local - global``; SCAFFOLD adds its control
delta), so scaling the reply's arrays scales the update the server aggregates:

* :func:`scale_update` sends ``k * delta`` (``k = 100`` is the classic boosted update),
* :func:`sign_flip` sends ``-k * delta`` (gradient ascent on the federation's objective),
* :func:`gaussian_noise` sends ``delta + N(0, std^2)`` noise.

Error replies and other task kinds (evaluate, stats) pass through unchanged. Only for
simulation: a real site runs none of these.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from fedcare.errors import ConfigError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.site.app import Handler, Mod

__all__ = [
    "ATTACKS",
    "attack_mod",
    "gaussian_noise",
    "malicious_mods",
    "scale_update",
    "sign_flip",
]


def _tamper(edit: Callable[[Task, ArrayRecord], ArrayRecord]) -> Mod:
    def mod(task: Task, next_handler: Handler) -> Reply:
        reply = next_handler(task)
        if task.kind != "fit" or reply.error is not None:
            return reply
        return replace(reply, arrays=edit(task, reply.arrays))

    return mod


def scale_update(factor: float) -> Mod:
    """A mod that multiplies the site's update by ``factor``."""
    if not np.isfinite(factor):
        raise ConfigError(f"scale factor must be finite, got {factor!r}")
    return _tamper(lambda _task, arrays: arrays.map(lambda v: (v * factor).astype(v.dtype)))


def sign_flip(factor: float = 1.0) -> Mod:
    """A mod that sends ``-factor`` times the site's update (``factor > 0``)."""
    if not (np.isfinite(factor) and factor > 0):
        raise ConfigError(f"sign flip factor must be a finite number > 0, got {factor!r}")
    return scale_update(-factor)


def gaussian_noise(std: float, *, seed: int) -> Mod:
    """A mod that adds N(0, ``std``^2) noise to every parameter of the update.

    The noise for a task depends only on ``seed``, the round and the site, so runs repeat.
    """
    if not (np.isfinite(std) and std > 0):
        raise ConfigError(f"noise std must be a finite number > 0, got {std!r}")

    def noisy(task: Task, arrays: ArrayRecord) -> ArrayRecord:
        rng = np.random.default_rng([seed, task.round, zlib.crc32(task.site_id.encode())])
        return arrays.map(lambda v: (v + rng.normal(0.0, std, size=v.shape)).astype(v.dtype))

    return _tamper(noisy)


#: Attack names as benchmarks and tests give them.
ATTACKS = ("scale", "sign_flip", "noise")


def attack_mod(kind: str, *, strength: float, seed: int = 0) -> Mod:
    """The mod for attack ``kind``: ``scale`` (x strength), ``sign_flip`` (x -strength) or
    ``noise`` (std strength).

    Raises
    ------
    ConfigError
        For an unknown ``kind`` or a bad ``strength``.
    """
    if kind == "scale":
        return scale_update(strength)
    if kind == "sign_flip":
        return sign_flip(strength)
    if kind == "noise":
        return gaussian_noise(strength, seed=seed)
    raise ConfigError(f"unknown attack {kind!r}; choose one of {list(ATTACKS)}")


def malicious_mods(
    site_ids: Sequence[str], kind: str, *, strength: float, seed: int = 0
) -> Mapping[str, Sequence[Mod]]:
    """``{site: [attack mod]}`` for each of ``site_ids``, ready for ``run_simulation(mods=...)``."""
    return {s: [attack_mod(kind, strength=strength, seed=seed)] for s in site_ids}
