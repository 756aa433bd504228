"""Run one study on the coordinator: the shared study driver over the coordinator's grid.

Round 0 (statistics and initial parameters) and every completed round are checkpointed through
the store in one transaction each. After a restart the runner resumes from the last completed
round; the per-round seeds depend only on the study seed and the round, so the final model
equals an uninterrupted run's. A round that ends with fewer than ``min_sites`` replies is
retried after a growing delay (up to ``round_retries`` times, waiting for sites in between);
then the study fails with the reason. A round whose missing replies are all
``plan-not-approved`` costs no retry: the study waits for the stewards, asking again with
backoff, until its ``approval_wait`` passes (:mod:`fedcare.coordinator.waiting`). While it
waits, the study's ``reason`` says what for (and which sites withdrew); a completed round
clears it. Cancelling the study, or stopping the coordinator, ends the runner between rounds.

Before round 0 the sites' feature schemas are compared (:meth:`StudyRunner._reference_schema`):
a site whose columns differ from the reference is refused for this study, named with the
differing columns in the round-0 record (``refused_sites``), the coordinator log and the audit
(``site-refused``), and the study goes on with the others while ``min_sites`` hold.

A ``fedbuff`` study runs asynchronously (:func:`~fedcare.strategy.async_loop.run_async`): each
server step is persisted as a round with its checkpoint; after a restart it resumes from the
last persisted version, the tasks its earlier run left open closed (their late replies are
recorded, never buffered; updates buffered but not yet stepped are asked for again).

Provenance: the study's final model is registered (with its model card) before the study is
marked completed; a study with ``init_model`` starts from that registered model's parameters.
Every persisted step is then appended to the coordinator's audit trail
(:mod:`fedcare.coordinator.audit_trail`: database first, audit second, reconciled on start).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from fedcare.coordinator.analytics_jobs import is_analytics_study, run_analytics_job
from fedcare.coordinator.audit_trail import CoordinatorAudit
from fedcare.coordinator.checkpoint import decode_checkpoint, encode_checkpoint
from fedcare.coordinator.grid import CoordinatorGrid, GridStopped
from fedcare.coordinator.hub import Hub
from fedcare.coordinator.privacy_guard import round_spends
from fedcare.coordinator.provenance import register_final_model, start_from_model
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.waiting import (
    RETRY_BACKOFF,
    WITHDRAWAL_BACKOFF,
    Backoff,
    RoundWaits,
    utc_text,
)
from fedcare.data.schema_check import reference_schema, schema_of_description
from fedcare.errors import FedcareError, RoundFailedError
from fedcare.models.registry import PackageBuilder
from fedcare.privacy.guard import guard_next_round
from fedcare.records.study import StudyConfig
from fedcare.secure.he.keys import HE_PUBLIC_FILE, coordinator_context
from fedcare.strategy.base import Strategy, StrategyState
from fedcare.strategy.driver import StudyStart, continue_study, start_study, study_strategy
from fedcare.strategy.loop import RoundRecord
from fedcare.strategy.plan import plan_for_study
from fedcare.transport.arrays_wire import encode_arrays_parts

__all__ = ["StudyRunner", "decode_checkpoint", "encode_checkpoint"]

log = logging.getLogger("fedcare.coordinator")


class _Stopped(Exception):
    """Raised from the round callback to leave the loop between rounds."""


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
        audit: CoordinatorAudit | None = None,
        kit_dir: Path | None = None,
        retry_backoff: Backoff = RETRY_BACKOFF,
        withdrawal_backoff: Backoff = WITHDRAWAL_BACKOFF,
        packages: PackageBuilder | None = None,
    ) -> None:
        self.store, self.hub, self.study_id, self.stop = store, hub, study_id, stop
        self.packages = packages  # study packages' sandboxed runners (package_models)
        self.kit_dir = kit_dir  # the coordinator kit: its public HE context, if any
        self.audit = audit or CoordinatorAudit(None)
        self.liveness_s, self.round_retries = liveness_s, round_retries
        self.on_round = on_round
        self.retry_backoff, self.withdrawal_backoff = retry_backoff, withdrawal_backoff
        self.waits = RoundWaits(
            retries=round_retries, approval_wait_s=86400.0, backoff=retry_backoff
        )
        self._waiting: str | None = None  # the note's first line: what the study waits for
        self._grid: CoordinatorGrid | None = None
        self.thread = threading.Thread(target=self._main, name=f"study-{study_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        try:
            self._run()
        except (_Stopped, GridStopped):
            log.info("study %s: runner stopped between rounds", self.study_id)
            self._audit_cancelled()
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
            return
        event = "study-finished" if status == "completed" else f"study-{status}"
        try:
            self.audit.append(event, self.study_id, reason=reason)
        except FedcareError as err:  # the start of the next runner or coordinator reconciles it
            log.error("study %s: cannot audit %s: %s", self.study_id, event, err)

    def _audit_start(self) -> None:
        """Reconcile the audit trail with the database, then note the (re)start."""
        self.audit.reconcile(self.store, self.study_id)
        info = self.store.get_study(self.study_id)
        if not any(e == "study-submitted" for e, _ in self.audit.entries(self.study_id)):
            created = info.created_at.isoformat()
            self.audit.append("study-submitted", self.study_id, name=info.name, created=created)
        self.audit.append(
            "study-started", self.study_id, resumed_from_round=info.last_completed_round
        )

    def _audit_cancelled(self) -> None:
        try:
            info = self.store.get_study(self.study_id)
            seen = {e for e, _ in self.audit.entries(self.study_id)}
            if info.status == "cancelled" and "study-cancelled" not in seen:
                self.audit.append("study-cancelled", self.study_id, reason=info.reason)
        except FedcareError as err:
            log.warning("study %s: cannot audit its cancellation: %s", self.study_id, err)

    def _register(self, study: StudyConfig) -> None:
        model, new = register_final_model(self.store, self.study_id, study)
        if new:
            self.audit.model_registered(model)

    def _run(self) -> None:
        info = self.store.get_study(self.study_id)
        if is_analytics_study(info.config):  # an analytics job: coordinator/analytics_jobs.py
            self._audit_start()
            run_analytics_job(
                self.store, self.hub, self.study_id, stop=self.stop, liveness_s=self.liveness_s
            )
            self._set("completed")
            return
        study = StudyConfig.from_dict(info.config, source=f"study {self.study_id}")
        grid = CoordinatorGrid(
            self.store,
            self.store.artifacts,
            self.hub,
            self.study_id,
            study.dataset.name,
            liveness_s=self.liveness_s,
            stop=self.stop,
            default_timeout=study.task_deadline_s,
            withdrawal_backoff=self.withdrawal_backoff,
        )
        grid.on_refused = self._site_refused
        grid.on_withdrawn = self._site_withdrew
        grid.on_late = self.audit.late_reply  # a reply stored after a FedBuff study's last step
        he_context = None  # privacy mode 'encrypted': the kit's PUBLIC context, never a secret
        if study.privacy.mode == "encrypted" and self.kit_dir is not None:
            he_context = coordinator_context(self.kit_dir / HE_PUBLIC_FILE)
        strategy = study_strategy(study, study.min_sites, he_context=he_context)
        self._audit_start()
        self._grid = grid
        self._show()  # a note left by an earlier process is stale
        self.waits.approval_wait_s = study.approval_wait
        plan_hash = plan_for_study(study).hash
        while True:
            self._check_running()
            try:
                start, last = self._resume(grid, study, strategy)
                if start is None:  # the last round is done
                    break
                self._guard(study, last + 1)  # privacy budget: refuse before any task
                continue_study(
                    grid,
                    study,
                    strategy,
                    self.study_id,
                    start,
                    start_round=last + 1,
                    on_round=self._persister(strategy, start, study),
                )
            except RoundFailedError as err:
                self._after_failure(grid, study, err, plan_hash)
        self._register(study)
        self._set("completed")

    def _resume(
        self, grid: CoordinatorGrid, study: StudyConfig, strategy: Strategy
    ) -> tuple[StudyStart | None, int]:
        """Where the study goes on from (``None`` once its last round is done, nothing read)."""
        last = self.store.last_round_digests(self.study_id)
        # tasks an earlier, interrupted attempt at the next round left open
        self.store.expire_tasks(self.study_id, 0 if last is None else last[0] + 1)
        if getattr(strategy, "asynchronous", False):  # FedBuff: from the last persisted version
            grid.close_earlier_submissions()  # an earlier run's open tasks: late replies noted
        if last is not None:
            if last[0] >= study.rounds:
                return None, last[0]
            if grid.reference is None:  # a restart: the reference chosen at round 0
                schema = self.store.get_round(self.study_id, 0).record.get("schema")
                if isinstance(schema, dict):
                    grid.set_reference(schema)
            params = self.store.mapped_params(last[1])  # views of the file, no copy
            state = self.store.artifacts.get(last[2])
            return decode_checkpoint(strategy, state, params), last[0]
        reference = self._reference_schema(grid, study.min_sites)
        shape = tuple(int(v) for v in reference["input_shape"])
        start = start_study(grid, study, strategy, self.study_id, shape, packages=self.packages)
        if study.init_model is not None:
            start = start_from_model(self.store, study.init_model, strategy, start)
        info = self.store.record_round(
            self.study_id,
            0,
            params=encode_arrays_parts(start.state.params),
            state=encode_checkpoint(strategy, start.state, dict(start.task_arrays)),
            record={
                "round": 0,
                "kind": "start",
                "task_arrays": sorted(start.task_arrays),
                "statistics_sites": list(start.statistics_sites),
                "statistics_rejected": dict(start.statistics_rejected),
                "init_model": study.init_model,
                "schema": reference,
                "refused_sites": dict(grid.refused),
                **self._withdrawn_record(),
            },
            duration_s=0.0,
        )
        self.audit.round_completed(info)
        self._round_done()
        return start, 0

    def _persister(
        self, strategy: Strategy, start: StudyStart, study: StudyConfig
    ) -> Callable[[RoundRecord, StrategyState], None]:
        return lambda rec, state: self._persist(strategy, start, rec, state, study)

    def _persist(
        self,
        strategy: Strategy,
        start: StudyStart,
        rec: RoundRecord,
        state: StrategyState,
        study: StudyConfig,
    ) -> None:
        record = {**rec.to_dict(), **self._withdrawn_record()}
        info = self.store.record_round(
            self.study_id,
            rec.round,
            params=encode_arrays_parts(state.params),
            state=encode_checkpoint(strategy, state, dict(start.task_arrays)),
            record=record,
            duration_s=rec.duration_s,
            privacy=round_spends(study, record, self._rows(study)),  # mirror ledger, same tx
        )
        self.audit.round_completed(info)  # after the commit: see audit_trail's docstring
        self._round_done()
        if self.on_round is not None:
            self.on_round(self.study_id, rec)
        self._check_running()
        if rec.round < study.rounds:
            self._guard(study, rec.round + 1)

    def _rows(self, study: StudyConfig) -> dict[str, int]:
        """Each site's registered number of training rows of the study's dataset."""
        rows = {
            s.id: (s.datasets or {}).get(study.dataset.name, {}) for s in self.store.list_sites()
        }
        return {s: int(d["num_train"]) for s, d in rows.items() if "num_train" in d}

    def _guard(self, study: StudyConfig, round: int) -> None:
        """Raise PrivacyBudgetError (the study fails) if ``round`` would overspend."""
        history = [r.record for r in self.store.list_rounds(self.study_id) if r.round >= 1]
        guard_next_round(self.study_id, study, history, round)

    def _check_running(self) -> None:
        if self.stop.is_set():
            raise _Stopped()
        if self.store.get_study(self.study_id).status != "running":
            raise _Stopped()

    def _wait_for_sites(self, grid: CoordinatorGrid, needed: int) -> None:
        """Wait until ``needed`` sites can be sent tasks, saying so in the study's note."""
        before, shown = self._waiting, None
        while len(ids := grid.site_ids()) < needed:
            self._check_running()
            now = f"waiting: for {needed} sites offering {grid.dataset}; available: "
            now += ", ".join(ids) or "none"
            if now != shown:
                self._waiting, shown = "\n".join(filter(None, [before, now])), now
                self._show()
            self.stop.wait(0.5)
        if shown is not None:  # they are here: back to what was said before
            self._waiting = before
            self._show()

    def _reference_schema(self, grid: CoordinatorGrid, min_sites: int) -> dict[str, Any]:
        """The study's reference feature schema (see :mod:`fedcare.data.schema_check`): that of
        most connected sites. Sites that differ are refused for this study (the grid leaves
        them out, naming why); then wait until ``min_sites`` agreeing sites are there."""
        while True:
            self._wait_for_sites(grid, min_sites)
            described = grid.dataset_descriptions()
            schemas = {
                s: schema
                for s in grid.site_ids()
                if (schema := schema_of_description(described.get(s, {}))) is not None
            }
            if schemas:
                break
            self.stop.wait(0.5)
        reference = reference_schema(schemas)
        grid.set_reference(reference)
        self._wait_for_sites(grid, min_sites)
        return reference

    def _site_refused(self, site_id: str, reason: str) -> None:
        log.warning("study %s: site %s refused: %s", self.study_id, site_id, reason)
        try:
            self.audit.append("site-refused", self.study_id, site=site_id, reason=reason)
        except FedcareError as err:
            log.error("study %s: cannot audit the refusal of %s: %s", self.study_id, site_id, err)

    # --- waiting honestly (fedcare.coordinator.waiting) ------------------------------------------
    def _after_failure(
        self, grid: CoordinatorGrid, study: StudyConfig, err: RoundFailedError, plan_hash: str
    ) -> None:
        """Wait for the plan's approval, or retry after a delay, or fail (raises)."""
        outcomes = self.store.site_outcomes(self.study_id, err.round)
        decision = self.waits.after_failure(err, outcomes, plan_hash)
        if decision.event is not None:
            self.audit.append(decision.event, self.study_id, **decision.data)
        if decision.error is not None:
            raise decision.error
        log.warning("study %s: %s", self.study_id, decision.note)
        self._waiting = decision.note
        self._show()
        self._sleep(decision.delay_s)
        self._wait_for_sites(grid, study.min_sites)

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, leaving at once when the study stops running."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._check_running()
            self.stop.wait(min(left, 0.5))
        self._check_running()

    def _withdrawn_record(self) -> dict[str, Any]:
        withdrawn = self._grid.withdrawn() if self._grid is not None else {}
        return {"withdrawn_sites": withdrawn} if withdrawn else {}

    def _show(self) -> None:
        """Write the study's note: what it waits for, then each site withheld from it."""
        lines = [self._waiting] if self._waiting else []
        withdrawn = self._withdrawn_record().get("withdrawn_sites", {})
        lines += [f"{site} withdrew: {text}" for site, text in withdrawn.items()]
        self.store.note_study(self.study_id, "\n".join(lines) or None)

    def _round_done(self) -> None:
        self.waits.round_done()
        self._waiting = None
        self._show()

    def _site_withdrew(self, site_id: str, kind: str, until: datetime) -> None:
        log.warning("study %s: site %s withdrew (%s); not asked again before %s",
                    self.study_id, site_id, kind, utc_text(until))  # fmt: skip
        self.audit.append("site-withheld", self.study_id, site=site_id, kind=kind,
                          until=utc_text(until))  # fmt: skip
        self._show()
