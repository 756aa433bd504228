"""What each site did in each round of a study (``GET /studies/{id}/rounds``, the study page's
round timeline, and the ``round`` events of the event stream and of ``fedcare study wait`` on
the coordinator's host: :func:`progress_events`), from the store's rounds, tasks and replies.

A site's part in a round (its tasks of the round's last dispatch of each kind: the fit, then
the evaluation) reads, in this order:

* ``refused`` — it answered with a refusal (policy, plan, approval, privacy budget, package;
  :func:`fedcare.coordinator.status_view.is_refusal`), or the coordinator refused it at the
  start (its feature schema differs): ``reason`` says why;
* ``failed`` — it answered with another error (``reason``: ``kind: message``);
* ``timed out`` — no reply before the task's deadline (the task expired), or before its
  deadline-bound round closed (quorum and grace period: ``reason`` says so);
* ``not used`` — it replied but the aggregation rejected its update;
* ``aggregated`` — its update went into the round's model;
* ``replied`` — it replied and the round is not recorded yet (or it was an evaluation);
* ``sent`` — its task is out and no reply has come yet.

Each site also shows ``reply_s``: seconds from the round's start to its reply, from the
round's record (``fit["site_timing"]``).

Rounds recorded without tasks in the store (an in-process run), and the server steps of an
asynchronous (FedBuff) study, whose tasks of round ``N`` carry version ``N`` and so feed later
steps, are read from the round's record alone (what
:func:`fedcare.coordinator.audit_trail.round_summary` reads of it).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from fedcare.coordinator.rows import ActivityRow, ReplyInfo, RoundBrief, StudyInfo, TaskInfo
from fedcare.coordinator.status_view import is_refusal
from fedcare.coordinator.store import CoordinatorStore
from fedcare.dashboard.views import iso, study_brief
from fedcare.errors import NotFoundError, ValidationError

__all__ = [
    "FINAL_STATUSES",
    "RoundCache",
    "progress_events",
    "progress_key",
    "round_entries",
    "site_round_status",
]

Activity = Sequence[ActivityRow]
#: The order in which one site's several tasks of a round (fit, evaluate...) decide its status.
#: (An evaluation's ``replied`` does not hide that the same site's update was ``aggregated``.)
_RANK = {
    s: i
    for i, s in enumerate(
        ["refused", "failed", "timed out", "sent", "not used", "aggregated", "replied"]
    )
}
_TIMEOUT_WORDS = ("no reply before the deadline", "timeout", "timed out", "deadline")
#: A study in one of these has ended (its event stream says ``end`` and closes).
FINAL_STATUSES = ("completed", "failed", "cancelled")


class RoundCache:
    """What the API shows of a study's completed rounds, per study and part (``entries``,
    ``summaries``, ``refusals``), for the ``studies`` most recently asked about. A recorded
    round never changes (its open tasks expired when it was recorded and later replies are
    refused), so only rounds after the cached ones are read again."""

    def __init__(self, studies: int = 256) -> None:
        self.studies = studies
        self._parts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, study_id: str, part: str = "entries", default: Any = None) -> Any:
        with self._lock:
            parts = self._parts.get(study_id)
            if parts is None or part not in parts:
                return [] if default is None else default
            self._parts.move_to_end(study_id)
            return parts[part]

    def put(self, study_id: str, value: Any, part: str = "entries") -> None:
        with self._lock:
            self._parts.setdefault(study_id, {})[part] = value
            self._parts.move_to_end(study_id)
            while len(self._parts) > self.studies:
                self._parts.popitem(last=False)


def round_entries(
    store: CoordinatorStore,
    study: StudyInfo,
    *,
    min_round: int = 0,
    cache: RoundCache | None = None,
) -> list[dict[str, Any]]:
    """The study's rounds from ``min_round`` on: recorded ones, then the round in progress
    (its tasks are out), each as a RoundEntry of the API contract. Two queries of the columns
    shown, in one transaction (:meth:`~fedcare.coordinator.store_activity.ActivityMixin.
    round_view`), of the rounds after those in ``cache`` only."""
    known = list(cache.get(study.id)) if cache is not None else []
    start = known[-1]["round"] + 1 if known else 0
    if cache is None:
        start = min_round
    rounds, activity = store.round_view(study.id, min_round=start)
    by_round: dict[int, list[ActivityRow]] = {}
    for task in activity:
        by_round.setdefault(task.round, []).append(task)
    sizes: dict[str, int] = {}

    def size(digest: str) -> int:  # the reply's artifact, not read (0 if it was pruned)
        if digest not in sizes:
            try:
                sizes[digest] = store.artifacts.size(digest)
            except (NotFoundError, ValidationError):
                sizes[digest] = 0
        return sizes[digest]

    now = datetime.now(timezone.utc)
    done = [_entry(r.round, r, by_round.pop(r.round, []), study, size, now) for r in rounds]
    if cache is not None and done:
        cache.put(study.id, known + done)  # a new list: readers keep theirs
    entries = known + done
    for number in sorted(by_round):  # tasks of a round not recorded (yet)
        entries.append(_entry(number, None, by_round[number], study, size, now))
    return [e for e in entries if e["round"] >= min_round]


def progress_key(study: StudyInfo) -> tuple[Any, ...]:
    """What, changed in a study's row, makes :func:`progress_events` worth calling again."""
    return (study.status, study.reason, study.last_completed_round, study.updated_at)


def progress_events(
    store: CoordinatorStore,
    study: StudyInfo,
    after_round: int,
    *,
    cache: RoundCache | None = None,
) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """The events of a study's progress for its row ``study`` as it now stands (the API's event
    stream, ``fedcare study wait`` on the coordinator's host): ``status`` (its StudyBrief), a
    ``round`` (RoundEntry) per completed round after ``after_round``, then ``end`` (the
    StudyBrief again) if it has ended. Returns them and the last round among them (else
    ``after_round``)."""
    events: list[tuple[str, dict[str, Any]]] = [("status", study_brief(study))]
    done = study.last_completed_round
    if done is not None and done > after_round:
        for entry in round_entries(store, study, min_round=after_round + 1, cache=cache):
            if entry["status"] == "completed" and entry["round"] > after_round:
                events.append(("round", entry))
                after_round = entry["round"]
    if study.status in FINAL_STATUSES:
        events.append(("end", study_brief(study)))
    return events, after_round


def _entry(
    number: int,
    recorded: RoundBrief | None,
    activity: Activity,
    study: StudyInfo,
    size: Callable[[str], int],
    now: datetime,
) -> dict[str, Any]:
    # a round's attempts count its dispatches (fit retries, then its evaluation): a site's
    # part is its task of the last dispatch of each kind
    latest: dict[str, int] = {}
    for row in activity:
        latest[row.kind] = max(latest.get(row.kind, 0), row.attempt)
    attempt = latest.get("fit", max(latest.values(), default=0))
    rows = sorted(
        (row for row in activity if row.attempt == latest[row.kind]),
        key=lambda row: row.kind != "fit",  # the fit first: its reply names the part
    )
    record: Mapping[str, Any] = recorded.record if recorded is not None else {}
    if "contributions" in (record.get("fit") or {}):  # a FedBuff step: its tasks (round = the
        rows = []  # version sent) belong to later steps; who made it is in its record alone
    summary = _summary(record) if recorded is not None else None
    per_site = ((record.get("evaluate") or {}).get("per_site")) or {}
    sites: dict[str, dict[str, Any]] = {}
    for task in rows:
        reply = task if task.received_at is not None else None  # the reply's columns
        status, reason = site_round_status(task, reply, summary, now)
        sent = task.delivered_at or task.created_at
        seen = sites.setdefault(
            task.site_id,
            {
                "status": status,
                "reason": reason,
                "reply_kind": None if reply is None else (reply.error_kind or task.kind),
                "reply_bytes": None,
                "sent_at": iso(sent),
                "replied_at": None,
            },
        )
        if _RANK[status] < _RANK[seen["status"]]:
            seen["status"], seen["reason"] = status, reason
        if reply is not None:
            seen["replied_at"] = max(seen["replied_at"] or "", iso(reply.received_at) or "")
            if seen["reply_kind"] is None:
                seen["reply_kind"] = reply.error_kind or task.kind
        if reply is not None and reply.payload_digest is not None:
            seen["reply_bytes"] = (seen["reply_bytes"] or 0) + size(reply.payload_digest)
    if summary is not None:
        _from_record(sites, summary, record)
    _with_timing(sites, record)
    for site, values in sites.items():
        values["metrics"] = _numbers(per_site.get(site) or {})
    started = min((t.created_at for t in activity), default=None)
    if started is None and recorded is not None:
        started = recorded.completed_at - timedelta(seconds=recorded.duration_s)
    status = (
        "completed"
        if recorded is not None
        else ("running" if study.status == "running" else "stopped")
    )
    return {
        "round": number,
        "attempt": attempt,
        "status": status,
        "started_at": iso(started),
        "finished_at": iso(recorded.completed_at) if recorded is not None else None,
        "metrics": _round_metrics(record, summary),
        "sites": dict(sorted(sites.items())),
    }


def site_round_status(
    task: TaskInfo | ActivityRow,
    reply: ReplyInfo | ActivityRow | None,
    summary: Mapping[str, Any] | None,
    now: datetime | None = None,
) -> tuple[str, str | None]:
    """``(status, reason)`` of one task of a site in a round (see the module docstring);
    ``reply``: its reply, or the task's :class:`~fedcare.coordinator.rows.ActivityRow` when
    that holds one, None before one arrived."""
    if reply is not None and reply.error_kind is not None:
        status = "refused" if is_refusal(reply.error_kind) else "failed"
        return status, f"{reply.error_kind}: {reply.error_message}"
    if reply is None:
        if task.status == "expired" or (
            task.deadline is not None and now is not None and task.deadline <= now
        ):
            return "timed out", "no reply before the deadline"
        return "sent", None
    if summary is None or task.kind != "fit":
        return "replied", None
    if task.site_id in summary["aggregated_sites"]:
        return "aggregated", None
    rejected = summary["measurements"].get("rejected_sites") or []
    if task.site_id in rejected:
        reasons = summary["measurements"].get("rejected_reasons") or {}
        why = reasons.get(task.site_id) if isinstance(reasons, dict) else None
        return "not used", str(why or "rejected by the aggregation")
    return "replied", None


def _from_record(
    sites: dict[str, dict[str, Any]], summary: Mapping[str, Any], record: Mapping[str, Any]
) -> None:
    """Sites the round's record names but the store holds no task of (an in-process run, or
    refused at the start of the study)."""
    blank = {"reply_kind": None, "reply_bytes": None, "sent_at": None, "replied_at": None}
    for site, reason in (record.get("refused_sites") or {}).items():
        sites.setdefault(site, {**blank, "status": "refused", "reason": str(reason)})
    for site, reason in summary["failed_sites"].items():
        if site in sites:
            continue
        text = str(reason)
        kind = text.split(":", 1)[0].strip()
        if any(w in text.lower() for w in _TIMEOUT_WORDS):
            status = "timed out"
        else:
            status = "refused" if is_refusal(kind) else "failed"
        sites[site] = {**blank, "status": status, "reason": text}
    rejected = summary["measurements"].get("rejected_sites") or []
    for site in summary["sampled_sites"]:
        if site in sites:
            continue
        if site in summary["aggregated_sites"]:
            sites[site] = {**blank, "status": "aggregated", "reason": None}
        elif site in rejected:
            sites[site] = {**blank, "status": "not used", "reason": "rejected by the aggregation"}
    for site in summary["aggregated_sites"]:
        sites.setdefault(site, {**blank, "status": "aggregated", "reason": None})


def _with_timing(sites: dict[str, dict[str, Any]], record: Mapping[str, Any]) -> None:
    """Each site's ``reply_s`` (seconds from the round's start to its reply, from the record's
    ``fit["site_timing"]``; None without one or before the round is recorded); a site left
    out when a deadline-bound round closed says so as its reason."""
    fit = record.get("fit") or {}
    timing = fit.get("site_timing") or {}
    failed = fit.get("failed_sites") or {}
    for site, values in sites.items():
        entry = timing.get(site) or {}
        values["reply_s"] = entry.get("reply_s")
        if values["status"] == "timed out" and entry.get("outcome") == "late" and site in failed:
            values["reason"] = str(failed[site])


def _summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """Who took part in a recorded round and its numeric measurements: the parts of
    :func:`~fedcare.coordinator.audit_trail.round_summary` used here (without its canonical
    JSON round trip, which a study's first view would pay for every round)."""
    fit = record.get("fit") or {}
    rejected = list(fit.get("rejected_sites") or [])
    measurements: dict[str, Any] = _numbers(fit)
    measurements["rejected_sites"] = rejected
    measurements["rejected_reasons"] = fit.get("rejected_reasons") or {}
    return {
        "sampled_sites": list(fit.get("sampled_sites") or []),
        "aggregated_sites": sorted(set(fit.get("site_info") or {}) - set(rejected)),
        "failed_sites": dict(fit.get("failed_sites") or {}),
        "measurements": measurements,
    }


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``values`` (a site's or the round's metrics)."""
    return {
        str(k): float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _round_metrics(
    record: Mapping[str, Any], summary: Mapping[str, Any] | None
) -> dict[str, float]:
    """The round's training measurements, then its evaluation's weighted means (these win)."""
    if summary is None:
        return {}
    out = {k: v for k, v in summary["measurements"].items() if isinstance(v, float)}
    out.update(_numbers((record.get("evaluate") or {}).get("weighted") or {}))
    return out
