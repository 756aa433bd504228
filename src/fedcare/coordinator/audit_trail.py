"""The coordinator's audit trail: study events in a signed, hash-chained log.

``<coordinator home>/audit.jsonl`` is a :class:`fedcare.audit.AuditLog` signed with the
coordinator kit's key. The study runner writes, in one place each:

- ``study-submitted`` (once per study) and ``study-started`` (each time a runner starts it,
  with the round it resumes from);
- ``round-completed``: round, sampled / aggregated / failed sites (with reasons), a summary of
  the measurements (scalars, rejected sites, anomaly scores), the checkpoint digests;
- ``site-refused`` / ``site-withdrew``: from failed replies whose error kind or message says
  so (see :func:`site_events`); ``round-failed`` for a round below ``min_sites``;
- ``late-reply`` (:meth:`CoordinatorAudit.late_reply`, once per task): a site sent a reply to
  a task its deadline-bound round (or its asynchronous study) had closed; site, round, attempt,
  kind, when the round closed it and when the reply came. Written by the servicer, which
  refuses the reply and stores it nowhere; and by an asynchronous study's runner for a reply
  stored after its last step but before its open tasks were closed (kept, taken into no step);
- ``model-registered`` (version, model hash, card hash, parent);
- ``study-finished`` / ``study-failed`` / ``study-cancelled``.

People's changes (:meth:`CoordinatorAudit.person_action`) name the person: ``user-added``,
``user-revoked``, ``user-rotated`` (``fedcare users``), ``study-cancel-requested``,
``study-submitted`` and ``package-uploaded`` (the API and the dashboard, with ``via``).

**Ordering.** The database write and the audit append are not one transaction. The runner
always commits to the database first and appends second, so the log never records what the
database does not hold. A crash in between leaves the log one step behind; :meth:`reconcile`
(run when the coordinator starts and when a runner starts) appends what is missing from the
database's rounds, registered model and final status, marked ``"reconciled": true``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedcare.coordinator.rows import ModelInfo, RoundInfo, TaskInfo
from fedcare.coordinator.store import CoordinatorStore
from fedcare.evaluation.model_card import canonical_json, card_hash

__all__ = ["CoordinatorAudit", "round_summary", "site_events"]

log = logging.getLogger("fedcare.coordinator")

AUDIT_FILE = "audit.jsonl"
FINAL_EVENTS = {
    "completed": "study-finished",
    "failed": "study-failed",
    "cancelled": "study-cancelled",
}
_REFUSED = ("refus", "policy", "approv", "budget", "not-allowed", "denied")
_WITHDREW = ("withdr", "consent", "revoked")


def _aggregated(fit: Mapping[str, Any]) -> list[str]:
    rejected = set(fit.get("rejected_sites") or [])
    return sorted(s for s in (fit.get("site_info") or {}) if s not in rejected)


def round_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """What ``round-completed`` records of a round record (``RoundRecord.to_dict()``)."""
    fit = record.get("fit") or {}
    measurements = {
        k: v
        for k, v in fit.items()
        if (isinstance(v, int | float) and not isinstance(v, bool)) or "anomal" in k or "score" in k
    }
    for key in ("rejected_sites", "rejected_reasons"):
        if key in fit:
            measurements[key] = fit[key]
    return {
        "round": record.get("round"),
        "sampled_sites": list(fit.get("sampled_sites") or []),
        "aggregated_sites": _aggregated(fit),
        "failed_sites": dict(fit.get("failed_sites") or {}),
        "measurements": json.loads(canonical_json(measurements)),
    }


def site_events(record: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``site-refused`` / ``site-withdrew`` events for the round's failed replies.

    A failure reason is ``"<error kind>: <message>"``; it is a withdrawal when it mentions
    withdrawal, consent or revocation, a refusal when it mentions a refusal, the policy, an
    approval or the privacy budget. Other failures (timeouts, crashes) are in
    ``round-completed`` only.
    """
    fit = record.get("fit") or {}
    events = []
    for site, reason in sorted((fit.get("failed_sites") or {}).items()):
        text = str(reason).lower()
        if any(w in text for w in _WITHDREW):
            event = "site-withdrew"
        elif any(w in text for w in _REFUSED):
            event = "site-refused"
        else:
            continue
        events.append((event, {"site": site, "round": record.get("round"), "reason": reason}))
    return events


class CoordinatorAudit:
    """Study events in the coordinator's audit log (a no-op without a log)."""

    def __init__(self, log_: Any | None, path: Path | None = None) -> None:
        self.log, self.path = log_, path
        self._lock = threading.Lock()

    @classmethod
    def open(cls, home: Path, kit_dir: Path, actor: str) -> CoordinatorAudit:
        """The log at ``home/audit.jsonl``, signed with ``kit_dir/key.pem``."""
        from fedcare.audit import AuditLog

        path = home / AUDIT_FILE
        return cls(AuditLog.open(path, key_path=kit_dir / "key.pem", actor=actor), path)

    @property
    def enabled(self) -> bool:
        return self.log is not None

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def append(self, event: str, study_id: str, **data: Any) -> None:
        if self.log is not None:
            self.log.append(event, study_id=study_id, **data)

    def late_reply(self, task: TaskInfo) -> None:
        """``late-reply``: a reply to ``task`` came after its round (or its asynchronous study)
        closed it; when it was closed and when the reply came (the task's ``late_at``)."""
        self.append(
            "late-reply",
            task.study_id,
            site=task.site_id,
            round=task.round,
            attempt=task.attempt,
            kind=task.kind,
            closed_at=None if task.closed_at is None else task.closed_at.isoformat(),
            arrived_at=None if task.late_at is None else task.late_at.isoformat(),
        )

    def person_action(self, event: str, person: str, **data: Any) -> None:
        """A change a person made (``user-added``, ``study-cancelled`` through the API...),
        naming them as ``person``; a study's id, if any, goes in ``data`` as ``study_id``."""
        if self.log is not None:
            self.log.append(event, person=person, **data)

    # Reading back (for reconciliation) ---------------------------------------------------------
    def entries_by_study(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """``{study_id: [(event, data), ...]}`` over the whole log, in log order."""
        if self.path is None or not self.path.exists():
            return {}
        out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line; verify_log reports it
            data = record.get("data") if isinstance(record, dict) else None
            if isinstance(data, dict) and isinstance(data.get("study_id"), str):
                out.setdefault(data["study_id"], []).append((str(record.get("event")), data))
        return out

    def entries(self, study_id: str) -> list[tuple[str, dict[str, Any]]]:
        """``(event, data)`` of every entry about ``study_id``, in log order."""
        return self.entries_by_study().get(study_id, [])

    # Events -------------------------------------------------------------------------------------
    def round_completed(self, info: RoundInfo, *, reconciled: bool = False) -> None:
        extra = {"reconciled": True} if reconciled else {}
        self.append(
            "round-completed",
            info.study_id,
            **{**round_summary(info.record), "round": info.round},
            checkpoint={"params": info.params_digest, "state": info.state_digest},
            **extra,
        )
        for event, data in site_events(info.record):
            self.append(event, info.study_id, **{**data, "round": info.round}, **extra)

    def model_registered(self, model: ModelInfo, *, reconciled: bool = False) -> None:
        self.append(
            "model-registered",
            model.study_id,
            version=model.version,
            round=model.round,
            model_hash=model.model_hash,
            card_hash=card_hash(model.card),
            parent=model.parent,
            **({"reconciled": True} if reconciled else {}),
        )

    def reconcile_all(self, store: CoordinatorStore) -> int:
        """:meth:`reconcile` every study (reading the log once); return how many were added."""
        if self.log is None:
            return 0
        seen = self.entries_by_study()
        return sum(self.reconcile(store, s.id, seen.get(s.id, [])) for s in store.list_studies())

    def reconcile(
        self,
        store: CoordinatorStore,
        study_id: str,
        seen: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> int:
        """Append what the database holds for ``study_id`` and the log lacks; return how many.

        ``seen`` is the study's entries if the caller has read them already.
        """
        if self.log is None:
            return 0
        with self._lock:
            seen = self.entries(study_id) if seen is None else seen
            events = {e for e, _ in seen}
            rounds = {d.get("round") for e, d in seen if e == "round-completed"}
            added = 0
            for info in store.list_rounds(study_id):
                if info.round not in rounds:
                    self.round_completed(info, reconciled=True)
                    added += 1
            for model in store.list_models(study_id):
                if "model-registered" not in events:
                    self.model_registered(model, reconciled=True)
                    added += 1
            study = store.get_study(study_id)
            final = FINAL_EVENTS.get(study.status)
            if final is not None and final not in events:
                self.append(final, study_id, reason=study.reason, reconciled=True)
                added += 1
        if added:
            log.warning("study %s: %d audit entries reconciled from the database", study_id, added)
        return added
