"""Slow sites for simulation: a site mod that makes a site's fit tasks take longer.

:class:`Slowdown` times the site's fit task and then sleeps ``factor - 1`` times as long (plus
``extra_s``), so a straggler costs wall time but no CPU: on a machine with few cores the other
sites' training is not slowed by it. :func:`pick_stragglers` picks a fraction of the sites by
seed and :func:`straggler_mods` gives the ``mods`` mapping
:func:`fedcare.simulation.training.open_grid` takes. Both are module-level and picklable, so
they run in :class:`~fedcare.simulation.parallel.ParallelGrid`'s worker processes too.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedcare.errors import ConfigError
from fedcare.records.messages import Reply, Task

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from fedcare.site.app import Mod

__all__ = ["Slowdown", "pick_stragglers", "straggler_mods"]


@dataclass(frozen=True)
class Slowdown:
    """A site mod: the site's fit tasks take ``factor`` times as long, plus ``extra_s``.

    Parameters
    ----------
    factor:
        How many times as long a fit task takes (>= 1); the extra time is slept.
    extra_s:
        Seconds slept on top (>= 0), for models whose training takes next to no time.

    Raises
    ------
    ConfigError
        For a factor below 1 or a negative ``extra_s``.
    """

    factor: float
    extra_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.factor, (int, float)) or not self.factor >= 1:
            raise ConfigError(f"slowdown factor must be a number >= 1, got {self.factor!r}")
        if not isinstance(self.extra_s, (int, float)) or not self.extra_s >= 0:
            raise ConfigError(f"slowdown extra_s must be a number >= 0, got {self.extra_s!r}")

    def __call__(self, task: Task, handler: Callable[[Task], Reply]) -> Reply:
        start = time.perf_counter()
        reply = handler(task)
        if task.kind == "fit":
            time.sleep((self.factor - 1) * (time.perf_counter() - start) + self.extra_s)
        return reply


def pick_stragglers(site_ids: Sequence[str], fraction: float, seed: int) -> list[str]:
    """``ceil(fraction * len(site_ids))`` of the sites, drawn by ``seed``, sorted.

    Raises
    ------
    ConfigError
        For a fraction outside ``[0, 1]`` or repeated site ids.
    """
    if not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ConfigError(f"straggler fraction must be in [0, 1], got {fraction!r}")
    sites = sorted(site_ids)
    if len(set(sites)) != len(sites):
        raise ConfigError(f"site ids repeat: {sites}")
    count = math.ceil(fraction * len(sites) - 1e-9)
    chosen = np.random.default_rng(seed).choice(len(sites), size=count, replace=False)
    return sorted(sites[int(i)] for i in chosen)


def straggler_mods(
    site_ids: Sequence[str],
    *,
    fraction: float = 0.1,
    factor: float = 10.0,
    seed: int,
    extra_s: float = 0.0,
) -> dict[str, list[Mod]]:
    """``{site: [Slowdown(factor, extra_s)]}`` for the stragglers :func:`pick_stragglers`
    picks (10 % of the sites by default, each 10x slower)."""
    slow = Slowdown(factor, extra_s)
    return {site: [slow] for site in pick_stragglers(site_ids, fraction, seed)}
