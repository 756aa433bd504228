"""The site's side of audit anchoring (:mod:`fedcare.audit.anchors`, the ``Anchor`` RPC).

After Hello, and then every ``every_s`` seconds or ``every_entries`` audit entries, the agent
sends its audit head, signed with its kit key, with the proof that its log still holds the
last head the coordinator countersigned. It keeps:

- ``<state>/audit-anchors.jsonl``: its heads countersigned by the coordinator; ``fedcare audit
  verify`` checks the log still holds each (a rollback behind one fails);
- ``<state>/coordinator-heads.jsonl``: the coordinator's signed heads. A coordinator head
  older than one already held, or a coordinator log that no longer holds the held head, is a
  rolled-back coordinator: audited as ``coordinator-audit-rollback``.

A refused anchor (``audit-rollback``: the coordinator holds a later head than this log has) is
audited as ``audit-anchor-refused``. Successful anchors are not audited (each entry would move
the head it anchors).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.audit._format import head_message, load_private_key, sign, signature_problem
from fedcare.audit.anchors import (
    COORDINATOR_HEADS_FILE,
    SITE_ANCHORS_FILE,
    Anchor,
    AnchorBook,
    anchor_message,
    countersign_message,
    entry_hash_at,
)
from fedcare.transport.grpc import fedcare_pb2 as pb

__all__ = ["SiteAnchors"]

Call = Callable[[Any], Any]


class SiteAnchors:
    """Anchors a site's audit head at the coordinator and keeps the coordinator's heads."""

    def __init__(
        self,
        state: Path,
        kit: Path,
        audit: Any,
        site_id: str,
        *,
        every_s: float = 30.0,
        every_entries: int = 100,
    ) -> None:
        self.audit = audit  # the site's fedcare.audit.AuditLog
        self.site_id = site_id
        self.every_s, self.every_entries = every_s, every_entries
        self.mine = AnchorBook(Path(state) / SITE_ANCHORS_FILE)
        self.theirs = AnchorBook(Path(state) / COORDINATOR_HEADS_FILE)
        self._key = load_private_key(Path(kit) / "key.pem")
        self._ca = x509.load_pem_x509_certificate((Path(kit) / "ca.pem").read_bytes())
        self._last_time = float("-inf")
        self._last_seq = 0
        self._last_refusal = ""

    def due(self) -> bool:
        if time.monotonic() - self._last_time >= self.every_s:
            return True
        return self.audit.checkpoint().seq - self._last_seq >= self.every_entries

    def anchor(self, call: Call) -> str:
        """Anchor the head now through ``call`` (the RPC); return what happened, in words."""
        self._last_time = time.monotonic()
        point = self.audit.checkpoint()
        mine = self.mine.newest()
        answer = call(self._request(point.seq, point.hash, mine.seq if mine else 0))
        if answer.error_kind == "anchor-proof-needed":
            answer = call(self._request(point.seq, point.hash, int(answer.last_seq)))
        key = self._coordinator_key(answer.coordinator_cert_pem)
        note = self._check_coordinator(answer, key)
        if not answer.accepted:
            return self._refused(answer, note)
        message = countersign_message(self.site_id, point.seq, point.hash, answer.anchored_at)
        if key is None or signature_problem(key, message, answer.countersig) is not None:
            return "audit anchor: the coordinator's countersignature does not verify; not kept"
        self._last_seq = point.seq
        if mine is None or point.seq > mine.seq:
            self.mine.add(Anchor(point.seq, point.hash, answer.countersig, answer.anchored_at))
        return note or f"audit head {point.seq} anchored at the coordinator"

    def _request(self, seq: int, hash_: str, proof_seq: int) -> Any:
        held = self.theirs.newest()
        proof = entry_hash_at(self.audit.path, proof_seq) if proof_seq else ""
        return pb.AnchorRequest(
            seq=seq,
            hash=hash_,
            sig=sign(self._key, anchor_message(self.site_id, seq, hash_)),
            proof_seq=proof_seq,
            proof_hash=proof or "",
            coordinator_seq=held.seq if held else 0,
            coordinator_hash=held.hash if held else "",
        )

    def _coordinator_key(self, pem: bytes) -> ec.EllipticCurvePublicKey | None:
        try:
            cert = x509.load_pem_x509_certificate(pem)
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            return None
        key = cert.public_key()
        return key if isinstance(key, ec.EllipticCurvePublicKey) else None

    def _check_coordinator(self, answer: Any, key: ec.EllipticCurvePublicKey | None) -> str:
        """Keep the coordinator's head; audit and describe a rolled-back coordinator log."""
        seq, hash_ = int(answer.coordinator_seq), str(answer.coordinator_hash)
        if key is None or seq <= 0:
            return ""  # an empty coordinator log: nothing to hold yet
        if signature_problem(key, head_message(seq, hash_), answer.coordinator_sig) is not None:
            return "audit anchor: the coordinator's head signature does not verify; not kept"
        held = self.theirs.newest()
        problem = ""
        if held is not None and seq < held.seq:
            problem = (
                f"the coordinator's audit log ends at entry {seq}, but this site holds its "
                f"signed head at entry {held.seq}: the coordinator's log was rolled back"
            )
        elif held is not None and answer.coordinator_proof_hash != held.hash:
            problem = (
                f"the coordinator's audit entry {held.seq} is no longer the one this site "
                "holds: the coordinator's log was rolled back or rewritten"
            )
        if problem:
            if problem != self._last_refusal:
                self._last_refusal = problem
                self.audit.append(
                    "coordinator-audit-rollback", held_seq=held.seq if held else None,
                    held_hash=held.hash if held else None, seq=seq, hash=hash_, reason=problem,
                )  # fmt: skip
            return f"audit anchor: {problem}"
        if held is None or seq > held.seq:
            self.theirs.add(Anchor(seq, hash_, answer.coordinator_sig, time_text()))
        return ""

    def _refused(self, answer: Any, note: str) -> str:
        text = f"{answer.error_kind}: {answer.message}"
        if text != self._last_refusal:
            self._last_refusal = text
            self.audit.append(
                "audit-anchor-refused", error_kind=answer.error_kind, reason=answer.message,
                coordinator_last_seq=int(answer.last_seq), coordinator_last_hash=answer.last_hash,
            )  # fmt: skip
        return f"audit anchor refused: {text}" + (f"; {note}" if note else "")


def time_text() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()
