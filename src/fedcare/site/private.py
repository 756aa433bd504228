"""Site middleware of privacy mode ``private``: clip, add this site's noise share, weight 1.

For a ``fit`` task whose pipeline has a ``distributed_dp`` entry
(:class:`fedcare.aggregation.private_sum.PrivateSum`), :class:`DistributedNoiseMod` lets
training run, then clips the update to the entry's ``clip_norm`` and adds
``N(0, site_std^2)`` (:func:`fedcare.aggregation.distributed_dp.site_add_noise`), and sets the
reply's weight (``num_samples``) to 1: the secure sum then adds clipped, noised updates with
equal weight, which is what the DP guarantee is computed for. It sits INSIDE the secure
aggregation mod, so the noise is added before masking and nobody sees an un-noised update.

Noise comes from the operating system's entropy; only a simulated site (``simulated=True``,
set by the simulation, never by a task) derives it from the task's seed, for reproducibility.

In a deployed site the pipeline this layer reads is the one the site derived from the
approved plan (:func:`fedcare.site.plans.expected_pipeline`): governance refuses a ``fit`` task
whose own pipeline differs and passes on the derived one, so the coordinator cannot switch
this layer off or weaken it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from fedcare.aggregation.distributed_dp import SPEC_KEY, site_add_noise
from fedcare.privacy.mechanisms import system_rng
from fedcare.records.messages import Reply, Task

__all__ = ["DistributedNoiseMod"]

Handler = Callable[[Task], Reply]
_NOISE_STREAM = 0xD9  # separates the simulated noise stream from the training stream


class DistributedNoiseMod:
    """``mod(task, next_handler) -> Reply`` adding this site's share of the DP noise."""

    def __init__(self, *, simulated: bool = False) -> None:
        self.simulated = simulated

    def _rng(self, task: Task) -> np.random.Generator:
        if not self.simulated:
            return system_rng()
        return np.random.default_rng([int(task.config.get("seed", 0)), _NOISE_STREAM])

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        reply = next_handler(task)
        if task.kind != "fit" or SPEC_KEY not in task.pipeline or not reply.ok:
            return reply
        noised = site_add_noise(task.pipeline, reply.arrays, self._rng(task))
        return replace(reply, arrays=noised, num_samples=1)
