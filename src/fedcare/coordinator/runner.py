"""Run one study on the coordinator: the shared study driver over the coordinator's grid.

Round 0 (statistics and initial parameters) and every completed round are checkpointed through
the store in one transaction each. After a restart the runner resumes from the last completed
round; the per-round seeds depend only on the study seed and the round, so the final model
equals an uninterrupted run's. A round that ends with fewer than ``min_sites`` replies is
retried (up to ``round_retries`` times, waiting for sites in between); then the study fails
with the reason. Cancelling the study, or stopping the coordinator, ends the runner between
rounds.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import numpy as np

from fedcare.coordinator.grid import CoordinatorGrid, GridStopped
from fedcare.coordinator.hub import Hub
from fedcare.coordinator.store import CoordinatorStore
from fedcare.errors import ConfigError, FedcareError, RoundFailedError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.strategy.base import Strategy, StrategyState
from fedcare.strategy.checkpoint import state_from_record, state_to_record
from fedcare.strategy.driver import StudyStart, continue_study, start_study, study_strategy
from fedcare.strategy.loop import RoundRecord
from fedcare.transport.codec import decode_arrays, encode_arrays

__all__ = ["StudyRunner", "decode_checkpoint", "encode_checkpoint"]

log = logging.getLogger("fedcare.coordinator")
HEADER = "__header__"


class _Stopped(Exception):
    """Raised from the round callback to leave the loop between rounds."""


def encode_checkpoint(
    strategy: Strategy, state: StrategyState, task_arrays: dict[str, ArrayRecord]
) -> bytes:
    """One self-contained checkpoint: strategy state, per-task arrays and a JSON header."""
    record, header = state_to_record(strategy, state)
    for name, arrays in task_arrays.items():
        record = record.merged(arrays.prefixed(f"task/{name}"))
    header = {**header, "task_arrays": sorted(task_arrays)}
    blob = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    return encode_arrays(record.merged({HEADER: blob}))


def decode_checkpoint(strategy: Strategy, data: bytes) -> StudyStart:
    """The state and task arrays saved by :func:`encode_checkpoint` (validated)."""
    record = decode_arrays(data)
    if HEADER not in record:
        raise FedcareError("checkpoint has no header")
    header = json.loads(bytes(record[HEADER]).decode())
    names = list(header.get("task_arrays", []))
    task_arrays = {n: record.unprefixed(f"task/{n}") for n in names}
    rest = ArrayRecord(
        {k: v for k, v in record.items() if k != HEADER and not k.startswith("task/")}, copy=False
    )
    return StudyStart(state=state_from_record(strategy, rest, header), task_arrays=task_arrays)


class StudyRunner:
    """Drives one study to completion (or failure, or cancellation) in its own thread."""

    def __init__(
        self,
        store: CoordinatorStore,
        hub: Hub,
        study_id: str,
        *,
        stop: threading.Event,
        liveness_s: float = 30.0,
        round_retries: int = 3,
        on_round: Callable[[str, RoundRecord], None] | None = None,
    ) -> None:
        self.store, self.hub, self.study_id, self.stop = store, hub, study_id, stop
        self.liveness_s, self.round_retries = liveness_s, round_retries
        self.on_round = on_round
        self.thread = threading.Thread(target=self._main, name=f"study-{study_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        try:
            self._run()
        except (_Stopped, GridStopped):
            log.info("study %s: runner stopped between rounds", self.study_id)
        except FedcareError as err:
            log.error("study %s failed: %s", self.study_id, err)
            self._set("failed", str(err))
        except Exception as err:  # a bug must not leave a study 'running' forever
            log.exception("study %s crashed", self.study_id)
            self._set("failed", f"internal error: {err!r}")

    def _set(self, status: str, reason: str | None = None) -> None:
        try:
            self.store.set_study_status(self.study_id, status, reason)
        except FedcareError as err:
            log.warning("study %s: cannot set %s: %s", self.study_id, status, err)

    def _run(self) -> None:
        info = self.store.get_study(self.study_id)
        study = StudyConfig.from_dict(info.config, source=f"study {self.study_id}")
        grid = CoordinatorGrid(
            self.store,
            self.store.artifacts,
            self.hub,
            self.study_id,
            study.dataset.name,
            liveness_s=self.liveness_s,
            stop=self.stop,
        )
        strategy = study_strategy(study, study.min_sites)
        failures, best = 0, -1
        while True:
            self._check_running()
            try:
                start, last = self._resume(grid, study, strategy)
                if last > best:
                    failures, best = 0, last
                if last >= study.rounds:
                    break
                continue_study(
                    grid,
                    study,
                    strategy,
                    self.study_id,
                    start,
                    start_round=last + 1,
                    on_round=self._persister(strategy, start),
                )
            except RoundFailedError as err:
                failures += 1
                if failures > self.round_retries:
                    raise RoundFailedError(
                        f"{err} (gave up after {self.round_retries} retries)",
                        round=err.round,
                        replied=err.replied,
                        required=err.required,
                    ) from None
                log.warning(
                    "study %s: %s; retry %d of %d", self.study_id, err, failures, self.round_retries
                )
                self._wait_for_sites(grid, study.min_sites)
        self._set("completed")

    def _resume(
        self, grid: CoordinatorGrid, study: StudyConfig, strategy: Strategy
    ) -> tuple[StudyStart, int]:
        checkpoint = self.store.last_completed_round(self.study_id)
        self._expire_stale(0 if checkpoint is None else checkpoint.round + 1)
        if checkpoint is not None:
            return decode_checkpoint(strategy, checkpoint.state), checkpoint.round
        self._wait_for_sites(grid, study.min_sites)
        start = start_study(grid, study, strategy, self.study_id, self._input_shape(grid))
        self.store.record_round(
            self.study_id,
            0,
            params=encode_arrays(start.state.params),
            state=encode_checkpoint(strategy, start.state, dict(start.task_arrays)),
            record={"round": 0, "kind": "start", "task_arrays": sorted(start.task_arrays)},
            duration_s=0.0,
        )
        return start, 0

    def _expire_stale(self, round: int) -> None:
        """Expire tasks left open by an earlier, interrupted attempt at ``round``."""
        open_attempts = {
            t.attempt
            for t in self.store.list_tasks(self.study_id, round)
            if t.status in ("pending", "delivered")
        }
        for attempt in sorted(open_attempts):
            self.store.expire_tasks(self.study_id, round, attempt)

    def _persister(
        self, strategy: Strategy, start: StudyStart
    ) -> Callable[[RoundRecord, StrategyState], None]:
        return lambda rec, state: self._persist(strategy, start, rec, state)

    def _persist(
        self, strategy: Strategy, start: StudyStart, rec: RoundRecord, state: StrategyState
    ) -> None:
        self.store.record_round(
            self.study_id,
            rec.round,
            params=encode_arrays(state.params),
            state=encode_checkpoint(strategy, state, dict(start.task_arrays)),
            record=rec.to_dict(),
            duration_s=rec.duration_s,
        )
        if self.on_round is not None:
            self.on_round(self.study_id, rec)
        self._check_running()

    def _check_running(self) -> None:
        if self.stop.is_set():
            raise _Stopped()
        if self.store.get_study(self.study_id).status != "running":
            raise _Stopped()

    def _wait_for_sites(self, grid: CoordinatorGrid, needed: int) -> None:
        while len(grid.site_ids()) < needed:
            self._check_running()
            self.stop.wait(0.5)

    def _input_shape(self, grid: CoordinatorGrid) -> tuple[int, ...]:
        described = grid.dataset_descriptions()
        shapes = {s: tuple(described.get(s, {}).get("input_shape", ())) for s in grid.site_ids()}
        distinct = set(shapes.values())
        if len(distinct) != 1 or () in distinct:
            raise ConfigError(f"sites disagree on the input shape of {grid.dataset!r}: {shapes}")
        return distinct.pop()
