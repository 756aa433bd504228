"""Site middleware for secure aggregation: answers ``secagg`` tasks and masks ``fit`` replies.

The mod builds a :class:`SecAggClient` when a task's pipeline asks for ``secagg`` and keeps the
client state per (study, round) across the stage tasks. Because a site's tasks run in a worker
process that may be restarted, the state is also written under the site's ``state_dir`` (an
owner-only 0600 JSON file: it holds this round's private keys and shares) and deleted after the
unmask stage. Randomness comes from ``os.urandom``; only a simulated site (``simulated=True``,
set by the simulation, never by a task) derives it from the task's seed, for reproducibility.

In a deployed site the pipeline this layer reads is the one the site derived from the
approved plan (:func:`fedcare.site.plans.expected_pipeline`): governance refuses a ``fit`` task
whose own pipeline differs and passes on the derived one, so the coordinator cannot switch
this layer off or weaken it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.secure.secagg.client import ClientState, SecAggClient
from fedcare.secure.secagg.keys import Entropy
from fedcare.secure.secagg.layer import SPEC_VERSION
from fedcare.secure.secagg.messages import HEADER_KEY, STAGE_KEY, STAGES, ServerMessage

__all__ = ["SecAggMod", "weighted_vector"]

Handler = Callable[[Task], Reply]


def weighted_vector(update: ArrayRecord, weight: float) -> np.ndarray:
    """``[w * delta, w]``: what a site sums securely for weighted FedAvg."""
    return np.concatenate([weight * update.flatten(), [float(weight)]])


class SecAggMod:
    """``mod(task, next_handler) -> Reply`` for one site."""

    def __init__(self, site_id: str, state_dir: Path | None, *, simulated: bool = False) -> None:
        self.site_id = site_id
        self.state_dir = state_dir
        self.simulated = simulated
        self.client = SecAggClient(site_id)
        self._states: dict[tuple[str, int], ClientState] = {}

    def __call__(self, task: Task, next_handler: Handler) -> Reply:
        if task.kind == "secagg":
            return self._stage(task, None, {})
        if task.kind == "fit" and "secagg" in task.pipeline:
            spec = task.pipeline["secagg"]
            if not isinstance(spec, Mapping) or spec.get("version") != SPEC_VERSION:
                raise ValidationError(
                    f"pipeline secagg spec {spec!r}: this site speaks version {SPEC_VERSION}"
                )
            inner = replace(
                task,
                config={k: v for k, v in task.config.items() if k not in (STAGE_KEY, HEADER_KEY)},
                arrays={k: v for k, v in task.arrays.items() if k != "secagg"},
            )
            reply = next_handler(inner)
            if not reply.ok:
                return reply
            vector = weighted_vector(reply.arrays, float(reply.num_samples))
            out = self._stage(task, vector, reply.metrics)
            return replace(out, info=reply.info)
        return next_handler(task)

    def _entropy(self, task: Task, stage: str) -> Entropy:
        if not self.simulated:
            return os.urandom
        gen = np.random.default_rng([int(task.config.get("seed", 0)), STAGES.index(stage)])
        return lambda n: gen.bytes(n)

    def _stage(self, task: Task, vector: np.ndarray | None, metrics: Mapping[str, float]) -> Reply:
        message = ServerMessage.from_task(task.config, task.arrays.get("secagg", ArrayRecord()))
        if (message.stage == "mask") != (vector is not None):
            raise ValidationError(
                f"secure aggregation stage {message.stage!r} came as a {task.kind!r} task"
            )
        key = (task.study_id, task.round)
        if message.stage == "advertise":  # a new round (or a retried one) starts afresh
            self._prune(task.study_id)
        state = None if message.stage == "advertise" else self._load(key)
        state, reply = self.client.step(
            state, message, self._entropy(task, message.stage), vector=vector
        )
        if message.stage == "unmask":
            self._forget(key)
        else:
            self._save(key, state)
        return Reply(
            study_id=task.study_id,
            round=task.round,
            site_id=task.site_id,
            kind=task.kind,
            arrays=reply.payload,
            num_samples=0,  # the weight travels masked, inside the vector
            metrics=metrics,
        )

    # persistence ------------------------------------------------------------------------------
    def _path(self, key: tuple[str, int]) -> Path | None:
        if self.state_dir is None:
            return None
        return self.state_dir / f"{_prefix(key[0])}{key[1]}.json"

    def _prune(self, study_id: str) -> None:
        """Forget this study's earlier rounds (an aborted round leaves its keys behind)."""
        self._states = {k: v for k, v in self._states.items() if k[0] != study_id}
        if self.state_dir is not None and self.state_dir.is_dir():
            for old in self.state_dir.glob(f"{_prefix(study_id)}*.json"):
                old.unlink(missing_ok=True)

    def _load(self, key: tuple[str, int]) -> ClientState | None:
        state = self._states.get(key)
        path = self._path(key)
        if state is None and path is not None and path.exists():
            state = ClientState.from_dict(json.loads(path.read_text(encoding="utf-8")))
            self._states[key] = state
        return state

    def _save(self, key: tuple[str, int], state: ClientState) -> None:
        self._states[key] = state
        path = self._path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state.to_dict(), fh)
        os.replace(tmp, path)

    def _forget(self, key: tuple[str, int]) -> None:
        self._states.pop(key, None)
        path = self._path(key)
        if path is not None:
            path.unlink(missing_ok=True)


def _prefix(study_id: str) -> str:
    return f"secagg-{hashlib.sha256(study_id.encode()).hexdigest()[:24]}-"
