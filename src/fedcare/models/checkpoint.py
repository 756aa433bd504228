"""Where a long local training saves its progress, so that a restarted site resumes it.

A training loop that supports it (the numpy loop :func:`fedcare.models._local_sgd.local_sgd`
and the torch adapter without DP-SGD) reads ``spec.checkpoint``
(:attr:`fedcare.models.base.LocalTrainSpec.checkpoint`, ``None`` by default). When one is set:

1. at the start it asks :meth:`TrainingCheckpoint.load` for saved progress. Progress that does
   not fit (another random stream, other shapes) is refused with
   :meth:`TrainingCheckpoint.rejected` and training starts from the beginning; progress that
   fits is applied and :meth:`TrainingCheckpoint.resumed` is told the step;
2. after every step it asks :meth:`TrainingCheckpoint.due` and, when due, hands a
   :class:`TrainingProgress` to :meth:`TrainingCheckpoint.save`: everything the remaining steps
   depend on (parameters, optimizer state, the step, the random generators' states).

A resumed run therefore ends with the same parameters as an uninterrupted one. This module
only defines the contract; the site keeps checkpoints on disk, keyed by its task
(:mod:`fedcare.site.train_checkpoint`), and adapters ignore it when they cannot resume
(closed-form fits, study packages, DP-SGD).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TrainingCheckpoint", "TrainingProgress", "rng_state"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingProgress:
    """A training loop's position: enough to take the remaining steps exactly as before.

    Attributes
    ----------
    step:
        Steps taken so far (>= 1).
    rng_start:
        The ``numpy.random.Generator`` state when training began (:func:`rng_state`): progress
        applies only to a run drawing the same random numbers.
    rng_now:
        The generator's state at ``step`` (the loop checks it once it has caught up).
    arrays:
        Parameters and optimizer state by name (the loop's own names).
    meta:
        JSON-safe extras (the loop's own keys).
    """

    step: int
    rng_start: Mapping[str, Any]
    rng_now: Mapping[str, Any]
    arrays: Mapping[str, np.ndarray]
    meta: Mapping[str, Any] = field(default_factory=dict)


def rng_state(rng: np.random.Generator | Mapping[str, Any]) -> dict[str, Any]:
    """The state of ``rng``'s bit generator (or such a state) as JSON-safe data (arrays become
    lists), so that a state read back from a checkpoint compares equal to the live one."""
    raw = rng.bit_generator.state if isinstance(rng, np.random.Generator) else rng
    state: dict[str, Any] = json.loads(json.dumps(raw, default=_plain))
    return state


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"a random generator state holds a {type(value).__name__}")


class TrainingCheckpoint(ABC):
    """Where one training run saves progress and finds it again (see the module docstring)."""

    def __init__(self) -> None:
        #: The step training resumed from, once a loop has applied saved progress.
        self.resumed_from_step: int | None = None

    @abstractmethod
    def load(self) -> TrainingProgress | None:
        """The progress saved for this run, or ``None`` (nothing saved, or nothing usable).

        Returns
        -------
        TrainingProgress or None
            Never raises for a missing or unreadable checkpoint: that is ``None``.
        """

    @abstractmethod
    def due(self) -> bool:
        """Whether the loop should save now (called after every step; must be cheap).

        Returns
        -------
        bool
            True when progress should be handed to :meth:`save`.
        """

    @abstractmethod
    def save(self, progress: TrainingProgress) -> None:
        """Keep ``progress`` (replacing what was saved before), all or nothing.

        Parameters
        ----------
        progress:
            The loop's position; its arrays may be reused by the loop after the call.
        """

    def resumed(self, step: int) -> None:
        """Called by the loop once it has applied progress saved at ``step``."""
        self.resumed_from_step = step

    def rejected(self, reason: str) -> None:
        """Called by the loop when saved progress does not fit this run; it starts over."""
        log.warning("training checkpoint not used: %s; training starts from step 0", reason)
