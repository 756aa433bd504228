"""Site middleware of update compression: compress what training produced, keep the residual.

For a ``fit`` task whose pipeline has a ``compression`` entry (the plan's; in a deployed site
governance passes on the pipeline the site derived from the approved plan,
:func:`fedcare.site.plans.expected_pipeline`), :class:`CompressionMod` lets training run and
replaces the reply's update with its compressed wire form
(:func:`fedcare.aggregation.compression.site_compress`). It is the innermost mod: it sees the
update exactly as the runtime produced it (after the plan's norm-bound clip).

Error feedback (int8, top-k): the residual, what compression left out, is kept per study and
added to the next round's update. It never leaves the site. With a state folder it is saved
after every round (``compression-<sha256(study)[:24]>.npz``, like SCAFFOLD's control variates)
so a restarted agent or worker continues with it. As for control variates, the residual from
*before* the last round is kept too: a retried round (its reply lost) starts from the same
residual as the first attempt, so no part of an update is counted twice or lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from fedcare.aggregation.compression import site_compress
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.site.round_state import RoundStateStore, for_round

__all__ = ["CompressionMod", "ResidualState"]

Handler = Callable[[Task], Reply]


@dataclass(frozen=True)
class ResidualState:
    """A study's error-feedback residual around this site's last training round."""

    round: int
    before: ArrayRecord | None
    after: ArrayRecord

    def for_round(self, round: int) -> ArrayRecord | None:
        return for_round(self, round, "compression residual")


class CompressionMod:
    """``mod(task, next_handler) -> Reply`` compressing a fit reply's update."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.residuals = RoundStateStore(state_dir, "compression", ResidualState)

    def path(self, study_id: str) -> Path | None:
        """Where ``study_id``'s residual is saved (None without a state folder)."""
        return self.residuals.path(study_id)

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        reply = next_handler(task)
        if task.kind != "fit" or "compression" not in task.pipeline or not reply.ok:
            return reply
        saved = self.residuals.get(task.study_id)
        residual = None if saved is None else saved.for_round(task.round)
        if residual is not None and not reply.arrays.same_structure(residual):
            residual = None  # another model under the same study id: start afresh
        wire, kept = site_compress(task.pipeline, reply.arrays, residual)
        if kept is not None:
            self.residuals.put(task.study_id, ResidualState(task.round, residual, kept))
        return replace(reply, arrays=wire)
