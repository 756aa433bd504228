"""The data steward's decisions on training plans, kept in the site's state folder.

One SQLite file (``<state_dir>/approvals.sqlite``, stdlib ``sqlite3``) holds one row per
(study name, plan hash): its status — ``pending`` (seen in a task, no decision yet),
``approved`` (until an expiry time), ``refused`` or ``revoked`` — with the steward's note and
the time of the decision. Every call opens its own short connection inside one transaction,
so the CLI (``fedcare site approve|refuse|revoke``) and a running agent can use the file at the
same time; SQLite's file lock serializes writers.

``check`` is what the agent asks before each task and while one runs: it returns the approval
when the plan may run now, or the reason why not. With a :class:`~fedcare.site.steward_seal.Steward`
(as the agent and the steward's commands use it) every decision is sealed: signed with the site
kit's key and recorded in the site's audit log in the same transaction, and an ``approved`` row
runs only while its seal holds (``approval-invalid`` otherwise: a row inserted or edited by
hand, or an old one put back). A file that cannot be read (corrupt, not a database, wrong
columns) refuses every task with ``approvals-unreadable`` naming the file and the problem; the
agent keeps running and serves again once the steward restores the file.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from fedcare.errors import ConfigError, NotFoundError
from fedcare.site.sqlite_tx import transaction
from fedcare.site.steward_seal import DECISION_EVENTS, Steward

__all__ = ["APPROVALS_FILE", "Approval", "ApprovalCheck", "ApprovalStore", "parse_until"]

APPROVALS_FILE = "approvals.sqlite"
STATUSES = ("pending", "approved", "refused", "revoked")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study TEXT NOT NULL,
    plan_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    until TEXT,
    note TEXT NOT NULL DEFAULT '',
    summary TEXT NOT NULL DEFAULT '',
    decided_at TEXT NOT NULL,
    sig TEXT NOT NULL DEFAULT '',
    UNIQUE (study, plan_hash)
)
"""
_COLUMNS = "id, study, plan_hash, status, until, note, summary, decided_at, sig"
#: Errors of a file that is not a readable approvals store.
UNREADABLE = (sqlite3.DatabaseError, ValueError, TypeError, OSError)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def parse_until(text: str) -> datetime:
    """An expiry time from ISO 8601 (a date means its end, UTC when no zone is given)."""
    try:
        if len(text) == 10:
            when = datetime.fromisoformat(text).replace(hour=23, minute=59, second=59)
        else:
            when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--until must be an ISO date or time (2026-12-31 or 2026-12-31T18:00), got {text!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Approval:
    """One (study, plan) row: the steward's current decision."""

    id: int
    study: str
    plan_hash: str
    status: str
    until: datetime | None
    note: str
    summary: str
    decided_at: datetime
    #: The steward's signature over the decision (empty: not sealed).
    sig: str = ""

    @property
    def approval_id(self) -> str:
        return f"approval-{self.id}"

    def until_text(self) -> str | None:
        return None if self.until is None else self.until.isoformat()

    def decided_text(self) -> str:
        return self.decided_at.isoformat()

    def expired(self, now: datetime) -> bool:
        return self.status == "approved" and self.until is not None and self.until <= now


@dataclass(frozen=True)
class ApprovalCheck:
    """The answer to "may this plan run now?": ``kind`` is empty when it may."""

    approval: Approval | None
    kind: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.kind


def _row(values: tuple[object, ...]) -> Approval:
    id_, study, plan_hash, status, until, note, summary, decided, sig = values
    return Approval(
        id=int(str(id_)),
        study=str(study),
        plan_hash=str(plan_hash),
        status=str(status),
        until=datetime.fromisoformat(str(until)) if until else None,
        note=str(note),
        summary=str(summary),
        decided_at=datetime.fromisoformat(str(decided)),
        sig=str(sig or ""),
    )


def _ensure_schema(db: sqlite3.Connection) -> None:
    db.execute(_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(approvals)")}
    if "sig" not in columns:  # a store from before decisions were sealed
        db.execute("ALTER TABLE approvals ADD COLUMN sig TEXT NOT NULL DEFAULT ''")


class ApprovalStore:
    """The approvals of one site (one SQLite file).

    With ``steward``, decisions are sealed and an approval runs only while its seal holds
    (see the module docstring); without one (unit tests, simulation) rows are taken as they
    are. A file that cannot be opened does not raise here: :meth:`check` refuses with the
    reason, so a running agent stays up while the steward repairs it.
    """

    def __init__(self, path: Path, *, steward: Steward | None = None) -> None:
        self.path = Path(path)
        self.steward = steward
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._tx() as db:
                _ensure_schema(db)
        except UNREADABLE:
            pass  # reported by check(), and raised by any change

    @classmethod
    def in_state_dir(cls, state_dir: Path, *, steward: Steward | None = None) -> ApprovalStore:
        return cls(Path(state_dir) / APPROVALS_FILE, steward=steward)

    def _unreadable(self, err: BaseException) -> ConfigError:
        return ConfigError(f"the site's approvals file {self.path} cannot be read ({err})")

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path)

    def _get(self, db: sqlite3.Connection, study: str, plan_hash: str) -> Approval | None:
        found = db.execute(
            f"SELECT {_COLUMNS} FROM approvals WHERE study = ? AND plan_hash = ?",
            (study, plan_hash),
        ).fetchone()
        return None if found is None else _row(found)

    def _decide(
        self,
        study: str,
        plan_hash: str,
        status: str,
        *,
        until: datetime | None = None,
        note: str = "",
        summary: str | None = None,
    ) -> Approval:
        if not study or not plan_hash:
            raise ConfigError(
                f"a decision needs a study and a plan hash, got {study!r} and {plan_hash!r}"
            )
        try:
            with self._tx() as db:
                _ensure_schema(db)
                db.execute(
                    "INSERT INTO approvals (study, plan_hash, status, until, note, summary,"
                    " decided_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (study, plan_hash)"
                    " DO UPDATE SET status = excluded.status, until = excluded.until,"
                    " note = excluded.note, summary = CASE WHEN excluded.summary = ''"
                    " THEN approvals.summary ELSE excluded.summary END,"
                    " decided_at = excluded.decided_at, sig = ''",
                    (
                        study,
                        plan_hash,
                        status,
                        until.isoformat() if until else None,
                        note,
                        summary or "",
                        _now().isoformat(),
                    ),
                )
                found = self._get(db, study, plan_hash)
                assert found is not None
                if self.steward is not None and self.steward.can_seal:
                    found = self._seal(db, found, note)
        except UNREADABLE as err:
            raise self._unreadable(err) from None
        return found

    def _seal(self, db: sqlite3.Connection, row: Approval, note: str) -> Approval:
        """Sign the decision and audit it, inside the transaction that stores it."""
        assert self.steward is not None and row.status in DECISION_EVENTS
        sealed = replace(row, sig=self.steward.seal(row))
        db.execute("UPDATE approvals SET sig = ? WHERE id = ?", (sealed.sig, row.id))
        self.steward.record(sealed, note)  # a failed append rolls the row back
        return sealed

    def approve(self, study: str, plan_hash: str, until: datetime, note: str = "") -> Approval:
        """Allow ``plan_hash`` for ``study`` until ``until`` (timezone-aware)."""
        if until.tzinfo is None:
            raise ConfigError(f"until must carry a timezone, got {until.isoformat()!r}")
        return self._decide(study, plan_hash, "approved", until=until, note=note)

    def refuse(self, study: str, plan_hash: str, note: str = "") -> Approval:
        """Refuse ``plan_hash`` for ``study``."""
        return self._decide(study, plan_hash, "refused", note=note)

    def revoke(self, study: str, plan_hash: str | None = None, note: str = "") -> list[Approval]:
        """Revoke the approval of one plan, or (no hash) every approved plan of ``study``."""
        if plan_hash is not None:
            hashes = [plan_hash]
        else:
            hashes = [a.plan_hash for a in self.list(study) if a.status == "approved"]
        if not hashes:
            raise NotFoundError(f"study {study!r} has no approved plan to revoke at this site")
        return [self._decide(study, h, "revoked", note=note) for h in hashes]

    def record_pending(self, study: str, plan_hash: str, summary: str = "") -> Approval:
        """Note a plan seen in a task; an existing decision is kept as it is."""
        try:
            with self._tx() as db:
                _ensure_schema(db)
                db.execute(
                    "INSERT INTO approvals (study, plan_hash, status, summary, decided_at)"
                    " VALUES (?, ?, 'pending', ?, ?) ON CONFLICT (study, plan_hash) DO NOTHING",
                    (study, plan_hash, summary, _now().isoformat()),
                )
                found = self._get(db, study, plan_hash)
        except UNREADABLE as err:
            raise self._unreadable(err) from None
        assert found is not None
        return found

    def get(self, study: str, plan_hash: str) -> Approval | None:
        """The row of (study, plan); ConfigError naming the file if it cannot be read."""
        try:
            with self._tx() as db:
                return self._get(db, study, plan_hash)
        except UNREADABLE as err:
            raise self._unreadable(err) from None

    def approved_version(self) -> tuple[int, str] | None:
        """What changes whenever the steward approves a plan (again): the number of approved
        rows and the latest decision time among them. None if the file cannot be read. The
        agent says Hello again when it changes, so a study the coordinator withholds after a
        withdrawal is offered again at once (:meth:`fedcare.site.agent.SiteAgent`)."""
        try:
            with self._tx() as db:
                count, latest = db.execute(
                    "SELECT COUNT(*), COALESCE(MAX(decided_at), '') FROM approvals"
                    " WHERE status = 'approved'"
                ).fetchone()
        except UNREADABLE:
            return None
        return int(count), str(latest)

    def list(self, study: str | None = None) -> list[Approval]:
        """Every row (of one study), oldest first."""
        query = f"SELECT {_COLUMNS} FROM approvals"
        args: tuple[str, ...] = ()
        if study is not None:
            query, args = query + " WHERE study = ?", (study,)
        try:
            with self._tx() as db:
                return [_row(r) for r in db.execute(query + " ORDER BY id", args).fetchall()]
        except UNREADABLE as err:
            raise self._unreadable(err) from None

    def check(self, study: str, plan_hash: str, now: datetime | None = None) -> ApprovalCheck:
        """Whether ``plan_hash`` may run for ``study`` at ``now``, with the reason if not."""
        try:
            found = self.get(study, plan_hash)
        except ConfigError as err:
            return ApprovalCheck(
                None,
                "approvals-unreadable",
                f"{err}; every task is refused until the steward restores or moves it aside",
            )
        hint = f"`fedcare site approve --study {study} --plan {plan_hash}`"
        if found is None or found.status == "pending":
            return ApprovalCheck(
                found,
                "plan-not-approved",
                f"plan {plan_hash} for study {study!r} is not approved at this site; "
                f"its steward can run {hint}",
            )
        if found.status == "refused":
            note = f" ({found.note})" if found.note else ""
            return ApprovalCheck(
                found,
                "plan-refused",
                f"the steward refused plan {plan_hash} for study {study!r}{note}",
            )
        if found.status == "revoked":
            note = f" ({found.note})" if found.note else ""
            return ApprovalCheck(
                found,
                "approval-revoked",
                f"the site withdrew from study {study!r}: approval of plan {plan_hash} was revoked "
                f"on {found.decided_at:%Y-%m-%d %H:%M} UTC{note}",
            )
        if found.expired(now or _now()):
            assert found.until is not None
            return ApprovalCheck(
                found,
                "approval-expired",
                f"approval of plan {plan_hash} for study {study!r} expired on "
                f"{found.until:%Y-%m-%d %H:%M} UTC; its steward can renew it with {hint}",
            )
        problem = None if self.steward is None else self.steward.problem(found)
        if problem is not None:
            return ApprovalCheck(
                found,
                "approval-invalid",
                f"{found.approval_id} of plan {plan_hash} for study {study!r} is not valid: "
                f"{problem}; its steward can approve it again with {hint}",
            )
        return ApprovalCheck(found)
