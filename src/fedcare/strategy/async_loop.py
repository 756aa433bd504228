"""The asynchronous driver of FedBuff (:mod:`fedcare.strategy.fedbuff`) over any grid that runs
asynchronous rounds (:meth:`fedcare.grid.Grid.submit`, ``arrivals``, ``open_tasks``,
``cancel_open``).

The server keeps model version ``t`` (the study's round number: version ``t`` is the model after
``t`` server steps). Up to ``concurrency`` sites have a fit task open, each carrying the version
it was sent as its ``round``. Each arrival is screened: it must answer the open task of its site
(a reply to a cancelled or unknown task is recorded as unexpected and never buffered), without
an error; its staleness ``tau = t - round`` within ``max_staleness`` (else dropped and
recorded); its update well-formed and its weight within its site's declared rows
(:func:`~fedcare.strategy.fedbuff.update_problem`). Good ones are buffered; when ``K`` are
buffered the server steps, ``t`` grows by one, and the step's :class:`RoundRecord` (round = the
new version; each contribution with its sent version, staleness, weight, wait and the task its
reply answered, ``task``) goes to ``on_round``. A run first buffers again the replies an earlier
run of the study received but took into no step (:meth:`fedcare.grid.Grid.unstepped`: the
coordinator after a restart; ``restored`` in their contributions), so their sites are not asked
for those updates again. After every arrival the idle sites are sent the current version, least
recently sent first, so ``concurrency`` tasks stay open. A site whose reply failed or was
rejected is not sent a task again until the next step. The global model is evaluated every
``evaluate_every`` versions and at the last. When ``num_rounds`` steps are done (or the study
fails), the tasks still open are cancelled.

Determinism: every task's seed is :func:`~fedcare.strategy.loop.task_seed` of the study seed,
the task's dispatch number, its site and kind; over the in-memory grid (arrivals in submission
order) a study gives the same model every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedcare.errors import RoundFailedError
from fedcare.grid import Grid
from fedcare.records.messages import Reply, Task
from fedcare.strategy.base import StrategyState
from fedcare.strategy.fedbuff import BufferedUpdate, FedBuff, update_problem
from fedcare.strategy.loop import RoundConfig, RoundRecord, exchange, task_seed
from fedcare.strategy.screening import with_valid_metrics, with_valid_validation
from fedcare.strategy.timing import round_s

__all__ = ["run_async"]

OnRound = Callable[[RoundRecord, StrategyState], None]


@dataclass
class _Step:
    """What happened since the last server step."""

    started: float = field(default_factory=time.perf_counter)
    buffer: list[BufferedUpdate] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)  # the task each buffered reply answers
    restored: set[str] = field(default_factory=set)  # of those, buffered again at a restart
    failures: dict[str, str] = field(default_factory=dict)
    dropped_stale: dict[str, int] = field(default_factory=dict)
    site_info: dict[str, dict[str, str]] = field(default_factory=dict)
    benched: set[str] = field(default_factory=set)


class _Driver:
    """The state of one asynchronous run (see the module docstring)."""

    def __init__(
        self, grid: Grid, strategy: FedBuff, state: StrategyState, cfg: RoundConfig, version: int
    ) -> None:
        self.grid, self.strategy, self.state, self.cfg = grid, strategy, state, cfg
        self.version = version
        self.sites = sorted(grid.site_ids())
        self.concurrency = min(strategy.concurrency, len(self.sites))
        self.declared = grid.declared_rows("train")
        self.template = state.params.skeleton()
        self.open: dict[str, tuple[Task, float]] = {}
        self.last_sent: dict[str, int] = {}
        self.dispatched = 0
        self.step = _Step()

    def refill(self) -> None:
        """Send the current version to idle sites until ``concurrency`` tasks are open."""
        idle = [s for s in self.sites if s not in self.open and s not in self.step.benched]
        idle.sort(key=lambda s: (self.last_sent.get(s, -1), s))
        tasks = []
        for site in idle[: self.concurrency - len(self.open)]:
            self.dispatched += 1
            self.last_sent[site] = self.dispatched
            seed = task_seed(self.cfg.seed, self.dispatched, site, "fit")
            tasks.append(
                Task(
                    study_id=self.cfg.study_id,
                    round=self.version,
                    site_id=site,
                    kind="fit",
                    params=self.state.params,
                    config={**self.strategy.site_config(), "seed": seed},
                    arrays=dict(self.cfg.task_arrays),
                    plan=self.cfg.plan,
                    pipeline=self.cfg.pipeline,
                )
            )
        if tasks:
            self.grid.submit(tasks)
            now = time.perf_counter()
            self.open.update((t.site_id, (t, now)) for t in tasks)

    def take(self, reply: Reply) -> None:
        """Screen one arrival; buffer it when it is good, note why not otherwise."""
        step, site = self.step, reply.site_id
        entry = self.open.get(site)
        if entry is None or not reply.matches(entry[0]):
            step.failures[f"{site} (unexpected)"] = (
                f"reply for study {reply.study_id!r} version {reply.round} kind {reply.kind!r} "
                "answers no open task"
            )
            return
        _, sent_at = self.open.pop(site)
        self.screen(reply, time.perf_counter() - sent_at)

    def restore(self, reply: Reply) -> None:
        """Buffer again, screened as an arrival, a reply an earlier run received but took into
        no step (:meth:`fedcare.grid.Grid.unstepped`), instead of asking for it again."""
        if reply.error is None and reply.round <= self.version:
            self.step.restored.add(reply.task_id)
            self.screen(reply, 0.0)

    def screen(self, reply: Reply, wait: float) -> None:
        """Buffer ``reply`` (an update of version ``reply.round``) when it is good."""
        step, site = self.step, reply.site_id
        if reply.error is not None:
            step.failures[site] = f"{reply.error.kind}: {reply.error.message}"
            step.benched.add(site)
            return
        staleness = self.version - reply.round
        cap = self.strategy.max_staleness
        if cap is not None and staleness > cap:
            step.dropped_stale[site] = staleness
            return
        reason = update_problem(self.template, reply, self.declared)
        if reason is not None:
            step.failures[site] = f"rejected: {reason}"
            step.benched.add(site)
            return
        update = BufferedUpdate(site, reply.round, staleness, reply.arrays, reply.num_samples)
        step.buffer.append(update)
        step.waits.append(wait)
        step.tasks.append(reply.task_id)
        step.site_info[site] = dict(reply.info)

    def server_step(self) -> RoundRecord:
        """Step the model with the full buffer; the new version's record (without evaluation)."""
        step = self.step
        self.state = self.strategy.step(self.state, step.buffer)
        self.version += 1
        contributions = [
            {
                "site": u.site_id,
                "sent_version": u.sent_version,
                "staleness": u.staleness,
                "weight": u.weight,
                "num_samples": u.num_samples,
                "wait_s": wait,
                "task": task,  # the reply it took (a restart buffers the others again)
                "restored": task in step.restored,
            }
            for u, wait, task in zip(step.buffer, step.waits, step.tasks, strict=True)
        ]
        norm = float(np.sqrt(sum(u.delta.sq_norm() for u in step.buffer)))
        fit: dict[str, Any] = {
            "num_contributions": len(step.buffer),
            "contributions": contributions,
            "contributors": [u.site_id for u in step.buffer],
            "staleness": [u.staleness for u in step.buffer],
            "mean_staleness": float(np.mean([u.staleness for u in step.buffer])),
            "sampled_sites": sorted({u.site_id for u in step.buffer}),
            "failed_sites": dict(step.failures),
            "dropped_stale": dict(step.dropped_stale),
            "site_timing": {  # as the round loop's: reports and the dashboard show it
                u.site_id: {"reply_s": round_s(wait), "outcome": "taken"}
                for u, wait in zip(step.buffer, step.waits, strict=True)
            },
            "buffered_update_norm": norm,
            "site_info": dict(step.site_info),
        }
        return RoundRecord(self.version, time.perf_counter() - step.started, fit)

    def next_arrival(self) -> Reply:
        """The next reply to an open task, or ``RoundFailedError`` when none can come."""
        if not self.open:
            raise RoundFailedError(
                f"version {self.version + 1}: no site can be sent a task (failed or rejected "
                f"since the last step: {self.step.failures})",
                round=self.version + 1,
                replied=len(self.step.buffer),
                required=self.strategy.buffer_size,
            )
        for reply in self.grid.arrivals(limit=1, timeout=self.cfg.round_timeout):
            return reply
        raise RoundFailedError(
            f"version {self.version + 1}: no update arrived within {self.cfg.round_timeout} s "
            f"(open: {sorted(self.open)})",
            round=self.version + 1,
            replied=len(self.step.buffer),
            required=self.strategy.buffer_size,
        )

    def evaluate(self) -> dict[str, Any]:
        """The current model's metrics on every site's test split, as the round loop does."""
        rnd = self.version
        rng = np.random.default_rng([self.cfg.seed, rnd])
        ins = self.strategy.configure_evaluate(rnd, self.state, self.sites, rng)
        failures: dict[str, str] = {}
        received = exchange(self.grid, self.cfg, rnd, "evaluate", self.state.params, ins, failures)
        declared = self.grid.declared_rows("test")
        replies = with_valid_metrics(received, declared, failures)
        summaries: dict[str, dict[str, Any]] = {}
        replies = with_valid_validation(replies, declared, failures, summaries)
        evaluation = {**self.strategy.aggregate_evaluate(rnd, replies), "failed_sites": failures}
        if summaries:
            evaluation["validation"] = dict(sorted(summaries.items()))
        return evaluation


def run_async(
    grid: Grid,
    strategy: FedBuff,
    state: StrategyState,
    cfg: RoundConfig,
    *,
    start_round: int = 1,
    on_round: OnRound | None = None,
) -> tuple[StrategyState, list[RoundRecord]]:
    """Run FedBuff server steps ``start_round..cfg.num_rounds`` from ``state`` (see the module
    docstring); returns the final state and one record per step.

    Raises
    ------
    RoundFailedError
        When no site can be sent a task, or no update arrives within ``cfg.round_timeout``.
    ConfigError
        When ``grid`` cannot run asynchronous rounds.
    """
    driver = _Driver(grid, strategy, state, cfg, start_round - 1)
    del state  # the driver holds the current one
    records: list[RoundRecord] = []
    try:
        kept = grid.unstepped()  # after a restart: buffered again first, not asked again
        while driver.version < cfg.num_rounds:
            if len(driver.step.buffer) < strategy.buffer_size:
                if kept:
                    driver.restore(kept.pop(0))
                else:
                    driver.refill()
                    driver.take(driver.next_arrival())
                if len(driver.step.buffer) < strategy.buffer_size:
                    continue
            record = driver.server_step()
            every, rnd = cfg.evaluate_every, driver.version
            evaluation = None
            if every and (rnd % every == 0 or rnd == cfg.num_rounds):
                evaluation = driver.evaluate()
            duration = time.perf_counter() - driver.step.started  # with the evaluation
            record = RoundRecord(record.round, duration, record.fit, evaluation)
            driver.step = _Step()  # the next step's arrivals, failures and clock
            records.append(record)
            if on_round is not None:
                on_round(record, driver.state)
    finally:
        grid.cancel_open()  # the study ended (or failed): late replies are dropped
    return driver.state, records
