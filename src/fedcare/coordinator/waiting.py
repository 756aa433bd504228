"""What a study does when a round fails or a site says no: wait honestly, with backoff.

Sans-I/O: these classes decide and word; the runner (:mod:`fedcare.coordinator.runner`) and the
grid (:mod:`fedcare.coordinator.grid`) sleep, write notes and send tasks. Three cases:

- **Awaiting approval.** Every missing reply of a failed round is ``plan-not-approved`` or
  ``approval-expired``: the plan waits for the stewards' decision (or its renewal). That
  costs no retry; the round is offered again with :class:`Backoff` until the study's
  ``approval_wait`` deadline passes, then the study fails naming the sites and the deadline
  (:meth:`RoundWaits.after_failure`).
- **Ordinary failure** (too few replies for another reason): a retry after a growing delay,
  up to ``round_retries``, each said in the study's note ("round 3 failed: …; retry 2 of 3 in
  20 s").
- **Withdrawal.** A site that refused with one of :data:`WITHDRAWAL_KINDS` (its steward said
  no) is not sent the study's tasks again before a growing delay passes or it connects again
  with a new Hello (:class:`Withdrawals`), so a steward who approves again gets the study back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from fedcare.errors import RoundFailedError

__all__ = [
    "APPROVAL_PENDING",
    "AWAITING_KINDS",
    "NO_REPLY",
    "RETRY_BACKOFF",
    "WITHDRAWAL_BACKOFF",
    "WITHDRAWAL_KINDS",
    "Backoff",
    "FailureDecision",
    "RoundWaits",
    "Withdrawals",
    "awaiting_approval",
    "duration_text",
    "utc_text",
]

#: The refusal kind of a plan that awaits its steward's decision.
APPROVAL_PENDING = "plan-not-approved"
#: Refusal kinds that wait for a steward's (new) approval: none yet, or one that expired.
AWAITING_KINDS = frozenset({APPROVAL_PENDING, "approval-expired"})
#: Refusal kinds by which a site's steward said no to a study.
WITHDRAWAL_KINDS = frozenset({"approval-revoked", "plan-refused", "policy-study-not-allowed"})
#: What a reply that never came counts as (no error kind).
NO_REPLY = "no-reply"

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Backoff:
    """Delays that double from ``first_s`` up to ``cap_s``."""

    first_s: float
    cap_s: float

    def __post_init__(self) -> None:
        if not (self.first_s >= 0 and self.cap_s >= self.first_s):
            raise ValueError(f"backoff needs 0 <= first_s <= cap_s, got {self}")

    def delay(self, attempt: int) -> float:
        """The delay before attempt ``attempt`` (1 for the first wait)."""
        return float(min(self.cap_s, self.first_s * 2.0 ** max(0, min(attempt - 1, 60))))


#: Ordinary retries and approval polls: 5 s doubling to 60 s.
RETRY_BACKOFF = Backoff(5.0, 60.0)
#: A site that withdrew is asked again after 30 s, doubling to 10 minutes.
WITHDRAWAL_BACKOFF = Backoff(30.0, 600.0)


def utc_text(when: datetime) -> str:
    """``2026-12-05 17:00:00 UTC``."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_text(seconds: float) -> str:
    """``24 h``, ``90 min``, ``20 s`` (the largest whole unit)."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:.3g} s"


def awaiting_approval(outcomes: Mapping[str, str]) -> list[str]:
    """The sites a failed round waits for when every missing reply is ``plan-not-approved``
    or ``approval-expired`` (the steward must approve, or renew; ``outcomes``: site -> error
    kind, ``"ok"`` or ``"no-reply"``); otherwise ``[]``."""
    missing = {site: kind for site, kind in outcomes.items() if kind != "ok"}
    if missing and all(kind in AWAITING_KINDS for kind in missing.values()):
        return sorted(missing)
    return []


@dataclass(frozen=True)
class FailureDecision:
    """What to do after a failed round: wait ``delay_s`` (saying ``note``), or fail with
    ``error``; ``event`` and ``data`` are the audit entry to write (``None``: none)."""

    delay_s: float
    note: str
    event: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    error: RoundFailedError | None = None


def _detail(err: RoundFailedError) -> str:
    text = str(err)
    prefix = f"round {err.round}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


class RoundWaits:
    """Counts a study's failed rounds and decides each wait (see the module docstring)."""

    def __init__(
        self,
        *,
        retries: int,
        approval_wait_s: float,
        backoff: Backoff = RETRY_BACKOFF,
        clock: Clock = _now,
    ) -> None:
        self.retries, self.approval_wait_s = retries, approval_wait_s
        self.backoff, self.clock = backoff, clock
        self.failures = 0  # ordinary failures since the last completed round
        self.polls = 0  # approval polls since the wait began
        self.approval_deadline: datetime | None = None

    def round_done(self) -> None:
        """A round completed: retries and the approval wait start afresh."""
        self.failures, self.polls, self.approval_deadline = 0, 0, None

    def after_failure(
        self, err: RoundFailedError, outcomes: Mapping[str, str], plan_hash: str
    ) -> FailureDecision:
        """The decision after ``err``; ``outcomes``: each asked site's error kind (or ``ok``,
        ``no-reply``) in the round's last exchange."""
        sites = awaiting_approval(outcomes)
        if sites:
            return self._await(err, sites, plan_hash)
        self.polls, self.approval_deadline = 0, None
        self.failures += 1
        data = {"round": err.round, "reason": str(err), "attempt": self.failures}
        if self.failures > self.retries:
            error = RoundFailedError(
                f"{err} (gave up after {self.retries} retries)",
                round=err.round,
                replied=err.replied,
                required=err.required,
            )
            return FailureDecision(0.0, str(error), "round-failed", data, error)
        delay = self.backoff.delay(self.failures)
        note = (
            f"round {err.round} failed: {_detail(err)}; "
            f"retry {self.failures} of {self.retries} in {delay:g} s"
        )
        return FailureDecision(delay, note, "round-failed", {**data, "retry_in_s": delay})

    def _await(self, err: RoundFailedError, sites: list[str], plan_hash: str) -> FailureDecision:
        now = self.clock()
        first = self.approval_deadline is None
        if self.approval_deadline is None:
            self.approval_deadline = now + timedelta(seconds=self.approval_wait_s)
        deadline, at = self.approval_deadline, ", ".join(sites)
        if now >= deadline:
            error = RoundFailedError(
                f"plan not approved at {at} within {duration_text(self.approval_wait_s)} "
                f"(deadline {utc_text(deadline)}): plan {plan_hash} still awaits the steward's "
                f"decision there (fedcare site approve); round {err.round}",
                round=err.round,
                replied=err.replied,
                required=err.required,
            )
            return FailureDecision(0.0, str(error), "round-failed", {"round": err.round}, error)
        self.polls += 1
        delay = min(self.backoff.delay(self.polls), (deadline - now).total_seconds())
        note = (
            f"waiting: awaiting approval at {at} (plan {plan_hash}; until {utc_text(deadline)}); "
            f"asking again in {delay:.3g} s"
        )
        if not first:  # one audit entry per wait, not one per poll
            return FailureDecision(delay, note)
        data = {"round": err.round, "sites": sites, "plan_hash": plan_hash}
        return FailureDecision(delay, note, "study-waiting", {**data, "until": utc_text(deadline)})


@dataclass
class _Withheld:
    kind: str
    until: datetime
    hello: int
    count: int


class Withdrawals:
    """Sites that withdrew from one study, withheld from its tasks for a growing delay.

    ``hello`` is the site's count of Hellos to this coordinator process
    (:meth:`fedcare.coordinator.hub.Hub.hellos`): a new Hello ends the wait at once.
    """

    def __init__(self, backoff: Backoff = WITHDRAWAL_BACKOFF, clock: Clock = _now) -> None:
        self.backoff, self.clock = backoff, clock
        self._sites: dict[str, _Withheld] = {}

    def withdrew(self, site: str, kind: str, hello: int) -> datetime:
        """Note that ``site`` refused with ``kind``; return when it may be asked again."""
        before = self._sites.get(site)
        count = 1 if before is None or before.hello != hello else before.count + 1
        until = self.clock() + timedelta(seconds=self.backoff.delay(count))
        self._sites[site] = _Withheld(kind, until, hello, count)
        return until

    def answered(self, site: str) -> None:
        """``site`` sent a usable reply: it takes part again, its delays start afresh."""
        self._sites.pop(site, None)

    def withheld(self, site: str, hello: int) -> bool:
        """Whether ``site`` is still not to be asked (no new Hello, delay not passed)."""
        entry = self._sites.get(site)
        return entry is not None and entry.hello == hello and self.clock() < entry.until

    def active(self, hellos: Callable[[str], int]) -> dict[str, str]:
        """Each withheld site -> ``"<kind>; not asked again before <time>"``."""
        return {
            site: f"{e.kind}; not asked again before {utc_text(e.until)}"
            for site, e in sorted(self._sites.items())
            if self.withheld(site, hellos(site))
        }
