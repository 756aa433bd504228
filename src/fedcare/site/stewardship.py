"""The data steward's access to a site's state folder: kit, audit log, sealed decisions.

What the steward's commands (``fedcare site approve|refuse|revoke|plan``) and the site
console (``fedcare site console``) share, so both act on the same state in the same way:

- the site's kit, given or as the agent recorded it at ``site start`` (``STATE/kit-path``);
- the site's signed audit log ``STATE/audit.jsonl`` (:func:`open_site_audit`) and its
  verification with the kit's certificates and the heads the coordinator countersigned
  (:func:`verify_site_audit`);
- the approvals store whose decisions are sealed with the kit's key and audited
  (:func:`steward_store`), naming the person who decided (``steward``) and through what
  (``via``: ``cli`` or ``console``) in each decision's audit entry.
"""

from __future__ import annotations

import getpass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from fedcare.errors import ConfigError
from fedcare.site.approvals import ApprovalStore

__all__ = [
    "AUDIT_FILE",
    "DEFAULT_APPROVAL_DAYS",
    "KIT_RECORD",
    "default_until",
    "kit_public_keys",
    "login_name",
    "open_site_audit",
    "recorded_kit",
    "remember_kit",
    "site_identity",
    "steward_store",
    "verify_site_audit",
]

AUDIT_FILE = "audit.jsonl"
#: Where ``site start`` records its kit, so the steward's commands find it from the state.
KIT_RECORD = "kit-path"
#: How long an approval given without an explicit expiry holds.
DEFAULT_APPROVAL_DAYS = 90


def default_until(days: int = DEFAULT_APPROVAL_DAYS) -> datetime:
    """An expiry ``days`` from now (UTC)."""
    return datetime.now(timezone.utc) + timedelta(days=days)


def login_name() -> str:
    """The operating-system login name of this process's user ("unknown" if it has none)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry (a bare container)
        return "unknown"


def remember_kit(state: Path, kit: Path) -> None:
    """Record the agent's kit in its state folder, for the steward's commands."""
    state.mkdir(parents=True, exist_ok=True)
    (state / KIT_RECORD).write_text(f"{kit.resolve()}\n", encoding="utf-8")


def recorded_kit(state: Path, kit: Path | None = None) -> Path:
    """``kit``, or the one the agent recorded in ``state``.

    Raises
    ------
    ConfigError
        If neither is there (naming the record file).
    """
    if kit is not None:
        return kit
    record = Path(state) / KIT_RECORD
    if record.is_file():
        return Path(record.read_text(encoding="utf-8").strip())
    raise ConfigError(
        f"no --kit given and {record} does not exist (the agent writes it at `site start`); "
        "pass --kit with this site's startup kit"
    )


def site_identity(kit: Path) -> str:
    """The site id of the kit's certificate."""
    from fedcare.transport.tls import load_kit

    return load_kit(kit).identity


def open_site_audit(state: Path, kit: Path, *, actor: str | None = None) -> Any:
    """The site's signed audit log ``<state>/audit.jsonl`` (actor: the site id by default).

    After ``fedcare provision rotate`` the kit keeps its earlier key under ``previous/``: the
    first open writes the ``key-rotated`` handover with it (:class:`fedcare.audit.AuditLog`),
    after which the earlier private key is deleted (its certificate stays, for verification).
    """
    from fedcare.audit import AuditLog
    from fedcare.transport.kit_history import forget_previous_keys, kit_certs, previous_keys

    identity = site_identity(kit)
    state.mkdir(parents=True, exist_ok=True)
    earlier = previous_keys(kit)
    log = AuditLog.open(
        state / AUDIT_FILE,
        key_path=kit / "key.pem",
        actor=actor or identity,
        trusted_certs=kit_certs(kit)[:-1],
        previous_keys=earlier,
    )
    if earlier:
        forget_previous_keys(kit)
    return log


def kit_public_keys(kit: Path) -> list[Any]:
    """The public keys the site's kit has had, oldest first (earlier ones kept by rotation)."""
    from fedcare.audit._format import load_cert_key
    from fedcare.transport.kit_history import kit_certs

    return [load_cert_key(p) for p in kit_certs(kit)]


def steward_store(
    state: Path, kit: Path, *, person: str | None = None, via: str | None = None
) -> ApprovalStore:
    """The site's approvals store whose decisions are sealed with the kit's key and audited
    (what ``fedcare site approve|refuse|revoke``, the site console and the agent use).

    ``person`` (who decides) and ``via`` (``cli``, ``console``) go into each decision's audit
    entry as ``steward`` and ``via``; the entry's actor stays ``<site>:steward``.
    """
    from fedcare.audit._format import load_private_key
    from fedcare.site.steward_seal import Steward

    actor = f"{site_identity(kit)}:steward"
    steward = Steward(
        kit_public_keys(kit),
        state / AUDIT_FILE,
        key=load_private_key(kit / "key.pem"),
        open_audit=lambda: open_site_audit(state, kit, actor=actor),
        person=person,
        via=via,
    )
    return ApprovalStore.in_state_dir(state, steward=steward)


def verify_site_audit(state: Path, kit: Path) -> Any:
    """Verify ``<state>/audit.jsonl`` as ``fedcare audit verify --kit KIT`` does: every entry,
    the chain, the signatures with every key the kit has had, the head checkpoint, and that
    the log still holds every head the coordinator countersigned (``audit-anchors.jsonl``).

    Returns the :class:`fedcare.audit.VerifyResult`; ConfigError if the log cannot be read.
    """
    from fedcare.audit import verify_log
    from fedcare.audit.anchors import SITE_ANCHORS_FILE, AnchorBook
    from fedcare.transport.kit_history import kit_certs

    held = [a.checkpoint for a in AnchorBook(state / SITE_ANCHORS_FILE).read()]
    return verify_log(state / AUDIT_FILE, cert_path=kit_certs(kit), witnessed=held)
