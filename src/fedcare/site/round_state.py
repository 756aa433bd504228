"""A study's arrays around a site's last training round, kept on disk.

SCAFFOLD's control variates, a personal model and compression's error-feedback residual all
keep the same thing per study: the round, the value from *before* it (so a retried round, its
reply lost, starts where the first attempt did) and the value after it. With a state folder
each is saved after every change as ``<prefix>-<sha256(study id)[:24]>.npz`` (write, then
rename), so a restarted agent or worker continues where it left off;
:class:`RoundStateStore` keeps them per study, in memory and on disk.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord

__all__ = [
    "RoundStateStore",
    "for_round",
    "load_round_state",
    "round_state_path",
    "save_round_state",
]

_META = ("round", "has_before")


def round_state_path(state_dir: Path | None, prefix: str, study_id: str) -> Path | None:
    """Where ``study_id``'s ``prefix`` state is saved (None without a state folder)."""
    if state_dir is None:
        return None
    digest = hashlib.sha256(study_id.encode()).hexdigest()[:24]
    return state_dir / f"{prefix}-{digest}.npz"


def load_round_state(path: Path | None) -> tuple[int, ArrayRecord | None, ArrayRecord] | None:
    """``(round, before, after)`` saved at ``path``, or None when nothing is saved there."""
    if path is None or not path.exists():
        return None
    with np.load(path, allow_pickle=False) as saved:
        arrays = ArrayRecord({k: saved[k] for k in saved.files if k not in _META})
        before = arrays.unprefixed("before")
        has_before = bool(saved["has_before"]) if "has_before" in saved.files else len(before) > 0
        return int(saved["round"]), before if has_before else None, arrays.unprefixed("after")


def save_round_state(
    path: Path | None, round: int, before: ArrayRecord | None, after: ArrayRecord
) -> None:
    """Save ``(round, before, after)`` at ``path`` atomically (nothing when ``path`` is None)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    record = after.prefixed("after")
    if before is not None:
        record = record.merged(before.prefixed("before"))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        allow_pickle=False,
        round=np.int64(round),
        has_before=np.bool_(before is not None),
        **dict(record),
    )
    os.replace(tmp, path)


def for_round(state: _RoundState, round: int, what: str) -> ArrayRecord | None:
    """What a fit task of ``round`` starts from: ``before`` when it redoes ``state``'s round
    (a retried round starts where the first attempt did), ``after`` for a later round.

    Raises
    ------
    ValidationError
        If ``round`` is older than ``state``'s round (``what`` names the state).
    """
    if round == state.round:
        return state.before
    if round > state.round:
        return state.after
    raise ValidationError(
        f"task for round {round} is older than this site's {what} (round {state.round})"
    )


class _RoundState(Protocol):
    @property
    def round(self) -> int: ...
    @property
    def before(self) -> ArrayRecord | None: ...
    @property
    def after(self) -> ArrayRecord: ...


S = TypeVar("S", bound=_RoundState)


class RoundStateStore(Generic[S]):
    """Each study's state of type ``make(round, before, after)`` in memory, read from and
    saved to ``state_dir`` (``<prefix>-<digest>.npz``; nothing on disk without a folder)."""

    def __init__(
        self,
        state_dir: Path | None,
        prefix: str,
        make: Callable[[int, ArrayRecord | None, ArrayRecord], S],
    ) -> None:
        self.state_dir = state_dir
        self.prefix = prefix
        self._make = make
        self._states: dict[str, S] = {}

    def path(self, study_id: str) -> Path | None:
        """Where ``study_id``'s state is saved (None without a state folder)."""
        return round_state_path(self.state_dir, self.prefix, study_id)

    def get(self, study_id: str) -> S | None:
        """The study's state, read from disk the first time (``None`` when there is none)."""
        state = self._states.get(study_id)
        if state is None:
            saved = load_round_state(self.path(study_id))
            if saved is not None:
                state = self._states[study_id] = self._make(*saved)
        return state

    def put(self, study_id: str, state: S) -> None:
        """Keep ``state`` as the study's, and save it."""
        self._states[study_id] = state
        save_round_state(self.path(study_id), state.round, state.before, state.after)
