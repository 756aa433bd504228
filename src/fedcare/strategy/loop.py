"""The one round loop. Simulation and deployment both run it, over different grids.

Each round: the strategy picks sites and says what they do; the loop turns that into tasks,
sends them through the grid, validates every reply (it must answer a task sent this round, at
most once, without an error; a fit weight within the site's declared rows and evaluation
metrics that summarize, :mod:`fedcare.strategy.screening`) and streams the good ones into the
strategy's aggregation (whose outermost layer checks each update's dtype, shape and values). A
round counts only when at least ``strategy.min_sites`` replies were aggregated; otherwise it
raises :class:`RoundFailedError` and the state is unchanged. A deadline-bound round
(``RoundConfig.round_grace_s``) asks the grid to close once ``min_sites`` replied and the grace
period passed (:class:`~fedcare.grid.Quorum`); each sampled site's reply time and outcome go in
``fit["site_timing"]`` (:mod:`fedcare.strategy.timing`). Then the global model is evaluated
on the sites' test splits, and ``on_round`` gets the round's record and new state (the
coordinator persists both in one transaction there).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from fedcare.errors import AggregationError, ConfigError, RoundFailedError
from fedcare.grid import Grid, Quorum
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task, TaskKind
from fedcare.secure.he.layer import PROTOCOL as ENCRYPTED_SUM
from fedcare.secure.secagg.layer import PROTOCOL as SECURE_SUM
from fedcare.strategy.base import Instruction, Strategy, StrategyState
from fedcare.strategy.encrypted import run_encrypted_sum
from fedcare.strategy.multistage import run_secure_sum
from fedcare.strategy.screening import (
    check_summed_weight,
    with_valid_metrics,
    with_valid_validation,
    within_declared,
)
from fedcare.strategy.timing import site_timing, timed

__all__ = [
    "PROTOCOL_RUNNERS",
    "RoundConfig",
    "RoundRecord",
    "evaluate_on_sites",
    "protocol_runner",
    "run_round",
    "run_rounds",
]

ProtocolRunner = Callable[..., tuple[list[Reply], Any]]
#: The runner of each multi-stage protocol an aggregator can name (``Aggregator.multistage``).
PROTOCOL_RUNNERS: dict[str, ProtocolRunner] = {
    SECURE_SUM: run_secure_sum,
    ENCRYPTED_SUM: run_encrypted_sum,
}


@dataclass(frozen=True)
class RoundConfig:
    """What the loop needs to build tasks: study identity, plan, seed, schedule."""

    study_id: str
    num_rounds: int
    seed: int
    plan: Mapping[str, Any] = field(default_factory=dict)
    task_arrays: Mapping[str, ArrayRecord] = field(default_factory=dict)
    round_timeout: float | None = None
    #: Deadline-bound rounds: close a round's fit exchange, and its evaluation, ``round_grace_s``
    #: after ``min_sites`` replied (:class:`~fedcare.grid.Quorum`); ``None`` waits for all or
    #: the deadline. (Multi-stage sums and the final evaluation wait for every site.)
    round_grace_s: float | None = None
    evaluate_every: int = 1
    pipeline: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundRecord:
    """What happened in one round: its measurements and the evaluation of the new model."""

    round: int
    duration_s: float
    fit: dict[str, Any]
    evaluate: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"round": self.round, "duration_s": self.duration_s, "fit": self.fit}
        if self.evaluate is not None:
            out["evaluate"] = self.evaluate
        return out


@lru_cache(maxsize=1 << 14)  # a secure round asks for each site's "secagg" seed three times
def task_seed(seed: int, round: int, site_id: str, kind: str) -> int:
    """A per-task seed that depends only on the study seed, round, site and kind."""
    words = [seed, round, zlib.crc32(site_id.encode()), zlib.crc32(kind.encode())]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _tasks(
    cfg: RoundConfig, round: int, kind: TaskKind, params: ArrayRecord, ins: Sequence[Instruction]
) -> list[Task]:
    return [
        Task(
            study_id=cfg.study_id,
            round=round,
            site_id=i.site_id,
            kind=kind,
            params=params,
            config={**i.config, "seed": task_seed(cfg.seed, round, i.site_id, kind)},
            arrays={**cfg.task_arrays, **i.arrays},
            plan=cfg.plan,
            pipeline=cfg.pipeline,
        )
        for i in ins
    ]


def _screen(
    replies: Iterable[Reply],
    tasks: Sequence[Task],
    failures: dict[str, str],
    closed: str = "no reply before the deadline",
) -> Iterator[Reply]:
    """Yield replies that answer one of ``tasks`` once and without error; note the rest
    (``closed``: why a task left unanswered was not waited for)."""
    pending = {t.site_id: t for t in tasks}
    for reply in replies:
        task = pending.get(reply.site_id)
        if task is None or not reply.matches(task):
            key = f"{reply.site_id} (unexpected)"
            failures[key] = (
                f"reply for study {reply.study_id!r} round {reply.round} kind {reply.kind!r} "
                "answers no open task of this round"
            )
            continue
        del pending[reply.site_id]
        if reply.error is not None:
            failures[reply.site_id] = f"{reply.error.kind}: {reply.error.message}"
            continue
        yield reply
        del reply  # not held while the next one is awaited (its arrays may be large)
    for site_id in pending:
        failures[site_id] = closed


def exchange(
    grid: Grid,
    cfg: RoundConfig,
    round: int,
    kind: TaskKind,
    params: ArrayRecord,
    ins: Sequence[Instruction],
    failures: dict[str, str],
    *,
    quorum: Quorum | None = None,
    arrivals: dict[str, float] | None = None,
    since: float | None = None,
) -> Iterator[Reply]:
    """Send one task per instruction and stream the valid replies.

    ``quorum`` closes the exchange early (:class:`~fedcare.grid.Quorum`); ``arrivals`` gets
    each reply's arrival, in seconds since ``since`` (a ``time.perf_counter()``; default: now).
    """
    tasks = _tasks(cfg, round, kind, params, ins)
    received = grid.send_and_receive(tasks, timeout=cfg.round_timeout, quorum=quorum)
    if arrivals is not None:
        start = time.perf_counter() if since is None else since
        received = timed(received, start, arrivals)
    closed = "no reply before the deadline"
    if quorum is not None:
        closed = (
            f"no reply before the round closed (a grace period of {quorum.grace_s:g} s after "
            f"{quorum.replies} sites replied, or its deadline)"
        )
    return _screen(received, tasks, failures, closed)


def evaluate_on_sites(
    grid: Grid,
    cfg: RoundConfig,
    round: int,
    params: ArrayRecord,
    sites: Sequence[str] | None = None,
    arrays: Mapping[str, ArrayRecord] | None = None,
    validation: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Metrics of ``params`` on each site's test split: ``(per_site, failures)``. The clinical
    validation summaries that came back (the plan's final round) go into ``validation``."""
    ins = [Instruction(s, arrays=arrays or {}) for s in (sites or grid.site_ids())]
    failures: dict[str, str] = {}
    received = exchange(grid, cfg, round, "evaluate", params, ins, failures)
    declared = grid.declared_rows("test")
    replies = with_valid_metrics(received, declared, failures)
    summaries: dict[str, dict[str, Any]] = {}
    replies = with_valid_validation(replies, declared, failures, summaries)
    per_site = dict(sorted((r.site_id, dict(r.metrics)) for r in replies))
    if validation is not None:
        validation.update(sorted(summaries.items()))
    return per_site, failures


def in_site_order(
    replies: Iterable[Reply], sites: Sequence[str], failures: Mapping[str, str]
) -> Iterator[Reply]:
    """``replies`` in sorted site order, whatever order they arrived in.

    Floating-point sums depend on order; summing in site order makes a round's result (and the
    model hash) the same in simulation and deployment. A reply that arrives early waits in a
    buffer only until every site before it has replied or failed (``failures`` is filled by
    the screening as replies arrive), so in-order arrival still streams with no buffer. No
    reference to a reply is kept once it is passed on (its arrays may be large or mapped).
    """
    expected = sorted(sites)
    waiting: dict[str, Reply] = {}
    at = 0
    for reply in replies:
        waiting[reply.site_id] = reply
        del reply
        while at < len(expected) and (expected[at] in waiting or expected[at] in failures):
            ready = waiting.pop(expected[at], None)
            at += 1
            if ready is not None:
                yield ready
            del ready
    for site in sorted(waiting):  # after sites that never answered
        yield waiting.pop(site)


def protocol_runner(strategy: Strategy) -> ProtocolRunner | None:
    """The runner of the multi-stage protocol the strategy's aggregator names, if any.

    The aggregator says which (:meth:`fedcare.aggregation.base.Aggregator.multistage`); the
    loop looks the runner up in :data:`PROTOCOL_RUNNERS`.

    Raises
    ------
    ConfigError
        If the aggregator names a protocol this loop has no runner for.
    """
    multistage = getattr(getattr(strategy, "aggregator", None), "multistage", None)
    name = multistage() if callable(multistage) else None
    if name is None:
        return None
    runner = PROTOCOL_RUNNERS.get(name)
    if runner is None:
        raise ConfigError(
            f"the aggregator needs multi-stage protocol {name!r}; this loop runs "
            f"{sorted(PROTOCOL_RUNNERS)}"
        )
    return runner


def _noting_info(replies: Iterable[Reply], into: dict[str, dict[str, str]]) -> Iterator[Reply]:
    """Pass ``replies`` on, noting each one's ``info`` under its site."""
    for reply in replies:
        into[reply.site_id] = dict(reply.info)
        yield reply
        del reply


def run_round(
    grid: Grid, strategy: Strategy, state: StrategyState, cfg: RoundConfig, round: int
) -> tuple[StrategyState, RoundRecord]:
    """Run training round ``round`` and, when scheduled, evaluate the new model."""
    start = time.perf_counter()
    rng = np.random.default_rng([cfg.seed, round])
    available = grid.site_ids()
    ins = strategy.configure_fit(round, state, available, rng)
    failures: dict[str, str] = {}
    site_info: dict[str, dict[str, str]] = {}  # provenance of each aggregated reply
    protocol: dict[str, Any] = {}  # measurements of a multi-stage (secure, encrypted) sum
    fit_replies: Iterable[Reply]
    stages = protocol_runner(strategy)
    declared = grid.declared_rows("train")
    arrivals: dict[str, float] = {}  # seconds from the round's start to each site's reply
    if stages is None:
        quorum = None
        if cfg.round_grace_s is not None:
            quorum = Quorum(strategy.min_sites, cfg.round_grace_s)
        received = exchange(
            grid,
            cfg,
            round,
            "fit",
            state.params,
            ins,
            failures,
            quorum=quorum,
            arrivals=arrivals,
            since=start,
        )
        checked = within_declared(received, declared, failures)
        fit_replies = in_site_order(checked, [i.site_id for i in ins], failures)
    else:  # the stages run here; one reply carries the (exact, order-free) sum
        fit_replies, protocol = stages(
            lambda c, kind, params, sins, f: exchange(
                grid, c, round, kind, params, sins, f, arrivals=arrivals, since=start
            ),
            cfg,
            strategy,
            round,
            state,
            ins,
            failures,
        )
    replies = _noting_info(fit_replies, site_info)
    try:
        new_state, measurements = strategy.aggregate_fit(
            round, state, replies, num_available=len(available)
        )
    except AggregationError as err:
        raise RoundFailedError(
            f"round {round}: no usable reply ({err}); failures: {failures}",
            round=round,
            replied=0,
            required=strategy.min_sites,
        ) from err
    site_info = protocol.pop("site_info", site_info)
    if stages is not None:  # only the sum was seen: its weight against the rows declared
        check_summed_weight(round, protocol, declared)
    measurements = {**measurements, **protocol}
    replied = int(measurements.get("num_contributions", 0))
    if replied < strategy.min_sites:
        raise RoundFailedError(
            f"round {round}: {replied} usable replies, min_sites is {strategy.min_sites}; "
            f"failures: {failures}",
            round=round,
            replied=replied,
            required=strategy.min_sites,
        )
    fit = {**measurements, "sampled_sites": [i.site_id for i in ins], "failed_sites": failures}
    fit["site_info"] = site_info
    fit["site_timing"] = site_timing([i.site_id for i in ins], arrivals, site_info)
    evaluation = None
    if cfg.evaluate_every and (round % cfg.evaluate_every == 0 or round == cfg.num_rounds):
        ev_ins = strategy.configure_evaluate(round, new_state, available, rng)
        ev_failures: dict[str, str] = {}
        ev_quorum = None  # a deadline-bound round waits for its stragglers' metrics no more
        if cfg.round_grace_s is not None and ev_ins:
            ev_quorum = Quorum(min(strategy.min_sites, len(ev_ins)), cfg.round_grace_s)
        received = exchange(
            grid, cfg, round, "evaluate", new_state.params, ev_ins, ev_failures, quorum=ev_quorum
        )
        declared_test = grid.declared_rows("test")
        ev = with_valid_metrics(received, declared_test, ev_failures)
        summaries: dict[str, dict[str, Any]] = {}
        ev = with_valid_validation(ev, declared_test, ev_failures, summaries)
        evaluation = {**strategy.aggregate_evaluate(round, ev), "failed_sites": ev_failures}
        if summaries:  # the final model's clinical validation, per site
            evaluation["validation"] = dict(sorted(summaries.items()))
    record = RoundRecord(round, time.perf_counter() - start, fit, evaluation)
    return new_state, record


def run_rounds(
    grid: Grid,
    strategy: Strategy,
    state: StrategyState,
    cfg: RoundConfig,
    *,
    start_round: int = 1,
    on_round: Callable[[RoundRecord, StrategyState], None] | None = None,
) -> tuple[StrategyState, list[RoundRecord]]:
    """Run rounds ``start_round..cfg.num_rounds``; resumable from any completed round."""
    records: list[RoundRecord] = []
    for rnd in range(start_round, cfg.num_rounds + 1):
        state, record = run_round(grid, strategy, state, cfg, rnd)
        records.append(record)
        if on_round is not None:
            on_round(record, state)
    return state, records
