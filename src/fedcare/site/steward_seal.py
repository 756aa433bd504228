"""The steward's seal on a decision: a signature with the site kit's key, and its audit entry.

A row of ``approvals.sqlite`` is only a claim: anyone who can write the file can insert one.
A decision made with ``fedcare site approve|refuse|revoke`` is therefore *sealed*:

- its canonical content (study, plan hash, decision, expiry, approval id, time of decision)
  is signed with the site kit's private key (the key that signs the site's audit log), and the
  signature is stored in the row (``sig``);
- the same decision, with that signature, is appended to the site's signed audit log
  (``approval`` / ``refusal`` / ``revocation``) in the same SQLite transaction.

At use, :meth:`Steward.problem` accepts an ``approved`` row only when its signature verifies
with one of the kit's keys (the current one, or one it had before a rotation) **and** the
newest steward decision on that (study, plan) in the audit log is this very decision (same
signature): a row inserted by hand has no valid signature, an edited row (a later expiry, say)
no longer matches its signature, and an old approval restored after a revocation is not the
newest decision in the audit log. The audit log itself is signed and hash-chained
(:mod:`fedcare.audit`), so a decision entry cannot be forged there either.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.audit._format import canonical, sign, signature_problem
from fedcare.audit.entry import check_line

__all__ = ["DECISION_EVENTS", "Sealable", "Steward", "approval_content"]

#: The audit event of each sealed decision.
DECISION_EVENTS = {"approved": "approval", "refused": "refusal", "revoked": "revocation"}
_DOMAIN = b"fedcare-approval-v1\x00"


class Sealable(Protocol):
    """What a sealed decision is made of (:class:`fedcare.site.approvals.Approval`)."""

    @property
    def approval_id(self) -> str: ...

    @property
    def study(self) -> str: ...

    @property
    def plan_hash(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def sig(self) -> str: ...

    def until_text(self) -> str | None: ...

    def decided_text(self) -> str: ...


def approval_content(row: Sealable) -> bytes:
    """The bytes a decision's signature covers (domain-separated canonical JSON)."""
    return _DOMAIN + canonical(
        {
            "approval_id": row.approval_id,
            "decided_at": row.decided_text(),
            "decision": row.status,
            "plan_hash": row.plan_hash,
            "study": row.study,
            "until": row.until_text(),
        }
    )


class _Decision(NamedTuple):
    seq: int
    event: str
    sig: str


class AuditSink(Protocol):
    def append(self, event: str, /, **data: Any) -> object: ...


@dataclass
class _DecisionIndex:
    """The newest steward decision per (study, plan) in the audit log, read incrementally."""

    path: Path
    keys: Sequence[ec.EllipticCurvePublicKey]
    _latest: dict[tuple[str, str], _Decision] = field(default_factory=dict)
    _offset: int = 0
    _inode: int = -1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def latest(self, study: str, plan_hash: str) -> _Decision | None:
        with self._lock:
            self._refresh()
            return self._latest.get((study, plan_hash))

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._latest, self._offset, self._inode = {}, 0, -1
            return
        if st.st_ino != self._inode or st.st_size < self._offset:  # replaced or cut: re-read
            self._latest, self._offset, self._inode = {}, 0, st.st_ino
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # only whole lines; a torn tail is read once completed
        for line in data[:end].split(b"\n"):
            if b'"event":"' in line and any(
                f'"event":"{e}"'.encode() in line for e in DECISION_EVENTS.values()
            ):
                self._add(line)
        self._offset += end

    def _add(self, line: bytes) -> None:
        record, problem = check_line(line)
        if record is None or problem or record["event"] not in DECISION_EVENTS.values():
            return
        message = str(record["hash"]).encode("ascii")
        if not any(signature_problem(k, message, record["sig"]) is None for k in self.keys):
            return  # not written by this site's key: ignored (audit verify reports it)
        data = record["data"]
        if not isinstance(data, dict) or not isinstance(data.get("sig"), str):
            return  # a decision from before decisions were sealed
        key = (str(data.get("study")), str(data.get("plan_hash")))
        self._latest[key] = _Decision(int(record["seq"]), str(record["event"]), data["sig"])


class Steward:
    """Seals the steward's decisions and checks a row's seal at use.

    Parameters
    ----------
    public_keys:
        The site kit's public keys: the current one and any it had before a rotation.
    audit_path:
        The site's audit log (``<state>/audit.jsonl``), where sealed decisions are recorded.
    key:
        The kit's private key, to seal new decisions (None: this store only checks).
    open_audit:
        Opens the site's audit log for the steward (needed with ``key``).
    person, via:
        Who decides and through what (``cli``, ``console``): recorded as ``steward`` and
        ``via`` in each decision's audit entry when given.
    """

    def __init__(
        self,
        public_keys: Sequence[ec.EllipticCurvePublicKey],
        audit_path: Path,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        open_audit: Callable[[], AbstractContextManager[AuditSink]] | None = None,
        person: str | None = None,
        via: str | None = None,
    ) -> None:
        self.public_keys = tuple(public_keys)
        self.person, self.via = person, via
        self.audit_path = Path(audit_path)
        self._key = key
        self._open_audit = open_audit
        self._index = _DecisionIndex(self.audit_path, self.public_keys)

    @property
    def can_seal(self) -> bool:
        return self._key is not None and self._open_audit is not None

    def seal(self, row: Sealable) -> str:
        """The signature of ``row``'s content with the kit key."""
        if self._key is None:
            raise RuntimeError("this steward holds no key to seal decisions with")
        return sign(self._key, approval_content(row))

    def record(self, row: Sealable, note: str) -> None:
        """Append the sealed decision to the site's audit log."""
        if self._open_audit is None:
            raise RuntimeError("this steward cannot write the audit log")
        who = {k: v for k, v in (("steward", self.person), ("via", self.via)) if v is not None}
        with self._open_audit() as log:
            log.append(
                DECISION_EVENTS[row.status],
                study=row.study,
                plan_hash=row.plan_hash,
                decision=row.status,
                until=row.until_text(),
                note=note,
                approval_id=row.approval_id,
                decided_at=row.decided_text(),
                sig=row.sig,
                **who,
            )

    def problem(self, row: Sealable) -> str | None:
        """None when ``row`` is a sealed decision the audit log holds as the newest; else why."""
        if not row.sig:
            return "it carries no steward signature (a row written outside `fedcare site approve`?)"
        content = approval_content(row)
        if not any(signature_problem(k, content, row.sig) is None for k in self.public_keys):
            return (
                "its steward signature does not verify with this site's kit key "
                "(a forged or edited row)"
            )
        try:
            latest = self._index.latest(row.study, row.plan_hash)
        except OSError as err:
            return f"the site's audit log {self.audit_path} cannot be read ({err})"
        if latest is None:
            return (
                f"the site's audit log {self.audit_path} holds no steward decision for it "
                "(a row copied from elsewhere, or the audit log was replaced)"
            )
        if latest.sig != row.sig:
            return (
                f"the newest steward decision on this plan in the audit log (entry {latest.seq}, "
                f"{latest.event}) is another one (an old row put back?)"
            )
        return None
