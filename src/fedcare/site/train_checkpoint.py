"""Long local training checkpointed at the site, so that a restarted worker resumes the task.

While a ``fit`` task trains, its loop (:mod:`fedcare.models.checkpoint`: the numpy local-SGD
models and the torch adapter; not study packages, closed-form models or DP-SGD) hands its
progress to a :class:`TaskCheckpoint` every ``checkpoint_every_s`` seconds (the site data
file's setting, default 60; 0 disables). The checkpoint is one file per study in the dataset's
state folder, next to the study's other state (:mod:`fedcare.site.round_state`)::

    STATE/<dataset>/train-checkpoint-<sha256(study id)[:24]>.npz

an ``.npz`` without pickles: the loop's arrays (parameters, optimizer state, torch's generator
state) and ``__meta__``, a JSON document with the format, the task id, the task's key, the step
and the numpy generator's states. It is written owner-only (0600) to a temporary file, synced,
then renamed over the last one, so a kill at any moment leaves the previous checkpoint whole.

The key (:func:`task_key`) is a SHA-256 over everything the training depends on: the task id
(study, round, kind, site), its config, plan, pipeline and arrays, the starting parameters and
SCAFFOLD correction the site derived from them, and the dataset's fingerprint. A checkpoint is
only resumed by a task with the same id and key, so another round, another study, a changed
plan or changed data never resumes from it. A checkpoint that cannot be read (truncated,
corrupt, another format) is ignored with a logged warning: the task trains from the start.

The runtime removes the study's checkpoint once the task's reply is produced (an error reply
too); a killed worker, a worker stopped at the time limit or a crashed agent leave it, and the
same task run again resumes from it, its reply saying ``info["resumed_from_step"]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.models.base import LocalTrainSpec
from fedcare.models.checkpoint import TrainingCheckpoint, TrainingProgress
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Task
from fedcare.site.round_state import round_state_path

__all__ = [
    "CHECKPOINT_PREFIX",
    "DEFAULT_CHECKPOINT_EVERY_S",
    "TaskCheckpoint",
    "checkpoint_path",
    "discard_checkpoint",
    "open_checkpoint",
    "resume_info",
    "task_key",
]

log = logging.getLogger(__name__)

#: The file name prefix of a study's training checkpoint in its dataset's state folder.
CHECKPOINT_PREFIX = "train-checkpoint"
#: The site data file's default ``checkpoint_every_s``.
DEFAULT_CHECKPOINT_EVERY_S = 60.0
_FORMAT = 1
_META = "__meta__"


def checkpoint_path(state_dir: Path | None, study_id: str) -> Path | None:
    """Where ``study_id``'s training checkpoint lives (None without a state folder)."""
    return round_state_path(state_dir, CHECKPOINT_PREFIX, study_id)


def _hash_record(digest: Any, name: str, record: Mapping[str, np.ndarray]) -> None:
    digest.update(f"\n{name}:{len(record)}".encode())
    for key, value in record.items():
        array = np.ascontiguousarray(value)
        digest.update(f"\n{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.data)


def task_key(task: Task, start: ArrayRecord, spec: LocalTrainSpec, fingerprint: str) -> str:
    """SHA-256 (hex) of everything a fit task's training depends on (see the module docstring).

    Parameters
    ----------
    task:
        The task (its id, config, plan, pipeline, params and arrays).
    start:
        The parameters training starts from (the task's, or with the site's own layers).
    spec:
        The training spec as the site built it (its SCAFFOLD correction is the site's).
    fingerprint:
        The dataset's fingerprint (:func:`fedcare.data.fingerprint.site_fingerprint`).
    """
    digest = hashlib.sha256(f"fedcare-train-checkpoint/{_FORMAT}\n{task.task_id}".encode())
    text = {"config": task.config, "plan": task.plan, "pipeline": task.pipeline}
    digest.update(json.dumps(text, sort_keys=True, default=str).encode())
    digest.update(f"\ndata:{fingerprint}".encode())
    _hash_record(digest, "params", task.params)
    for name in sorted(task.arrays):
        _hash_record(digest, f"arrays/{name}", task.arrays[name])
    if start is not task.params:  # FedBN: the site's own layers in the start
        _hash_record(digest, "start", start)
    _hash_record(digest, "correction", spec.correction or {})
    return digest.hexdigest()


class TaskCheckpoint(TrainingCheckpoint):
    """One task's training checkpoint on disk (see the module docstring).

    Parameters
    ----------
    path:
        The study's checkpoint file (:func:`checkpoint_path`).
    task_id, key:
        What a saved checkpoint must carry to be resumed (:func:`task_key`); ``key`` may be a
        callable, called once, when a checkpoint is found or saved (hashing a large task's
        parameters costs a pass over them, which a short training never needs).
    every_s:
        Seconds between saves (> 0); the first is due ``every_s`` after construction.
    clock:
        Monotonic seconds (injected by tests).
    """

    def __init__(
        self,
        path: Path,
        task_id: str,
        key: str | Callable[[], str],
        every_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0, got {every_s!r}")
        self.path, self.task_id, self.every_s = path, task_id, float(every_s)
        self._key = key
        self._clock = clock
        self._last = clock()

    @property
    def key(self) -> str:
        """The task's key (computed on first use)."""
        if callable(self._key):
            self._key = self._key()
        return self._key

    def load(self) -> TrainingProgress | None:
        if not self.path.exists():  # nothing to resume: the key is not needed
            return None
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                meta = json.loads(bytes(saved[_META]).decode("utf-8"))
                if meta.get("task_id") != self.task_id or meta.get("key") != self.key:
                    log.info("training checkpoint %s is another task's: not resumed", self.path)
                    return None
                arrays = {k: saved[k] for k in saved.files if k != _META}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {_FORMAT}")
            return TrainingProgress(
                step=int(meta["step"]),
                rng_start=dict(meta["rng_start"]),
                rng_now=dict(meta["rng_now"]),
                arrays=arrays,
                meta=dict(meta["meta"]),
            )
        except FileNotFoundError:
            return None
        except Exception as err:  # any unreadable file: train from the start, never fail
            log.warning(
                "training checkpoint %s is unreadable (%s: %s); task %s trains from the start",
                self.path,
                type(err).__name__,
                err,
                self.task_id,
            )
            return None

    def due(self) -> bool:
        return self._clock() - self._last >= self.every_s

    def save(self, progress: TrainingProgress) -> None:
        meta = {
            "format": _FORMAT,
            "task_id": self.task_id,
            "key": self.key,
            "step": progress.step,
            "rng_start": progress.rng_start,
            "rng_now": progress.rng_now,
            "meta": progress.meta,
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            text = json.dumps(meta, sort_keys=True).encode("utf-8")
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                arrays = {_META: np.frombuffer(text, dtype=np.uint8), **progress.arrays}
                np.savez(out, allow_pickle=False, **arrays)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except (OSError, TypeError, ValueError) as err:  # costs the checkpoint, not the task
            log.warning("training checkpoint %s not saved: %s", self.path, err)
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._last = self._clock()

    def discard(self) -> None:
        """Remove the checkpoint file (and a temporary one left by a kill while saving)."""
        for path in (self.path, self.path.with_name(self.path.name + ".tmp")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def open_checkpoint(
    state_dir: Path | None,
    task: Task,
    every_s: float,
    key: Callable[[], str],
) -> TaskCheckpoint | None:
    """The checkpoint of fit task ``task``, or None when checkpoints are off (``every_s`` 0, no
    state folder). ``key`` computes :func:`task_key`, only when a checkpoint is found or
    saved."""
    path = checkpoint_path(state_dir, task.study_id)
    if path is None or not every_s > 0:
        return None
    return TaskCheckpoint(path, task.task_id, key, every_s)


def resume_info(checkpoint: TrainingCheckpoint | None) -> dict[str, str]:
    """Reply info of a task that resumed training: ``{"resumed_from_step": "N"}``; else ``{}``."""
    step = None if checkpoint is None else checkpoint.resumed_from_step
    return {} if step is None else {"resumed_from_step": str(step)}


def discard_checkpoint(state_dir: Path | None, study_id: str) -> None:
    """Remove ``study_id``'s training checkpoint, if any (its task's reply is produced)."""
    path = checkpoint_path(state_dir, study_id)
    if path is not None:
        TaskCheckpoint(path, "", "", 1.0).discard()
