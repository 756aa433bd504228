"""The coordinator's side of audit anchoring (the ``Anchor`` RPC; :mod:`fedcare.audit.anchors`).

A site presents its audit head ``(seq, hash)`` signed with its kit key. :func:`judge` compares
it with the last head the coordinator countersigned for the site:

- no earlier anchor, the same head again, or a later head whose log still holds the anchored
  entry (``proof_seq``/``proof_hash`` equal the last anchor): countersigned and kept;
- a later head without that proof: ``anchor-proof-needed`` (the site answers with the hash
  its log holds at ``last_seq``);
- an earlier head, the same seq with another hash, or a proof that differs from the anchor:
  ``audit-rollback``. The head is kept as a ``rollback`` row with the reason, the
  coordinator's audit log records ``site-audit-rollback``, and the site is told why.

Every answer carries the coordinator's own head, signed with its kit key, and the hash its log
holds at the coordinator head the site last saw, so the site detects a rolled-back coordinator.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.audit._format import HEX64, head_message, load_private_key, sign, signature_problem
from fedcare.audit.anchors import anchor_message, countersign_message, entry_hash_at
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.store_anchors import AnchorInfo
from fedcare.transport.grpc import fedcare_pb2 as pb

__all__ = ["Anchoring", "judge"]

log = logging.getLogger("fedcare.coordinator")


def judge(
    last: AnchorInfo | None, seq: int, hash_: str, proof_seq: int, proof_hash: str
) -> tuple[str, str]:
    """``("", "")`` when the head may be countersigned, else ``(error kind, reason)``."""
    if last is None or (seq == last.seq and hash_ == last.hash):
        return "", ""
    when = f"{last.anchored_at:%Y-%m-%d %H:%M:%S} UTC"
    if seq < last.seq:
        return "audit-rollback", (
            f"the site's audit log ends at entry {seq}, but the coordinator countersigned its "
            f"entry {last.seq} ({last.hash[:12]}…) on {when}: the log was rolled back"
        )
    if seq == last.seq:
        return "audit-rollback", (
            f"the site's audit entry {seq} is {hash_[:12]}…, but the coordinator countersigned "
            f"{last.hash[:12]}… for it on {when}: the log was rewritten"
        )
    if proof_seq != last.seq:
        return "anchor-proof-needed", (
            f"send the hash your log holds at entry {last.seq} (the last anchor) as the proof"
        )
    if proof_hash != last.hash:
        return "audit-rollback", (
            f"the site's audit entry {last.seq} is now {proof_hash[:12] or 'missing'}…, but the "
            f"coordinator countersigned {last.hash[:12]}… for it on {when}: the log was rolled "
            "back and written again"
        )
    return "", ""


def _peer_key(cert_pem: bytes) -> ec.EllipticCurvePublicKey | None:
    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


class Anchoring:
    """Countersigns sites' audit heads and hands out the coordinator's own head."""

    def __init__(self, store: CoordinatorStore, kit_dir: Path, audit: Any) -> None:
        self.store = store
        self._key = load_private_key(Path(kit_dir) / "key.pem")
        self._cert_pem = (Path(kit_dir) / "cert.pem").read_bytes()
        self._audit = audit  # a CoordinatorAudit (its .log and .path), or None

    def answer(self, site_id: str, peer_cert_pem: bytes, request: Any) -> Any:
        """The ``AnchorResponse`` to a site's ``AnchorRequest``."""
        seq, hash_, sig = int(request.seq), str(request.hash), str(request.sig)
        reply = self._coordinator_head(int(request.coordinator_seq))
        key = _peer_key(peer_cert_pem)
        if not HEX64.fullmatch(hash_) or key is None:
            return self._refuse(reply, "bad-anchor", "the head's hash must be 64 hex digits")
        if signature_problem(key, anchor_message(site_id, seq, hash_), sig) is not None:
            return self._refuse(
                reply, "bad-anchor", "the head's signature does not verify with your certificate"
            )
        last = self.store.last_anchor(site_id)
        if last is not None:
            reply.update(last_seq=last.seq, last_hash=last.hash)
        kind, message = judge(last, seq, hash_, int(request.proof_seq), str(request.proof_hash))
        if kind == "audit-rollback":
            self.store.record_anchor(
                site_id, seq, hash_, sig, countersig=None, status="rollback", message=message
            )
            log.error("site %s: %s", site_id, message)
            self._audit_event(
                "site-audit-rollback", site=site_id, seq=seq, hash=hash_, reason=message
            )
        if kind:
            return self._refuse(reply, kind, message)
        if last is not None and last.seq == seq:
            at, countersig = _text(last.anchored_at), last.countersig or ""
        else:
            now = datetime.now(timezone.utc)
            at = _text(now)
            countersig = sign(self._key, countersign_message(site_id, seq, hash_, at))
            self.store.record_anchor(
                site_id, seq, hash_, sig, countersig=countersig, status="anchored", at=now
            )
        return pb.AnchorResponse(accepted=True, countersig=countersig, anchored_at=at, **reply)

    def _refuse(self, reply: dict[str, Any], kind: str, message: str) -> Any:
        return pb.AnchorResponse(accepted=False, error_kind=kind, message=message, **reply)

    def _coordinator_head(self, site_held_seq: int) -> dict[str, Any]:
        out: dict[str, Any] = {"coordinator_cert_pem": self._cert_pem}
        if self._audit is None or getattr(self._audit, "log", None) is None:
            return out
        point = self._audit.log.checkpoint()
        out.update(
            coordinator_seq=point.seq,
            coordinator_hash=point.hash,
            coordinator_sig=sign(self._key, head_message(point.seq, point.hash)),
        )
        if site_held_seq > 0:
            held = entry_hash_at(self._audit.path, site_held_seq)
            out["coordinator_proof_hash"] = held or ""
        return out

    def _audit_event(self, event: str, **data: Any) -> None:
        if self._audit is not None and getattr(self._audit, "log", None) is not None:
            self._audit.log.append(event, **data)


def _text(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat()
