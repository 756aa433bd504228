"""``fedcare users add|list|revoke|rotate``: the accounts of the coordinator's HTTP API (which
``fedcare coordinator start --api-port`` serves).

Run on the coordinator's host by the operator, on its home (``--home``, ``--db``). A token is
printed once (``add``, ``rotate``) and stored only as a salted scrypt hash. Every change is
written to the coordinator's audit trail (``HOME/audit.jsonl``, signed with the coordinator
kit's key, the kit recorded in ``HOME/kit-path`` or given with ``--kit``), naming the operator
(``--operator``, default: the login name).
"""

from __future__ import annotations

import getpass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer

from fedcare.cli.common import _store, console, fail
from fedcare.cli.options import DB, HOME
from fedcare.errors import FedcareError

__all__ = ["users_app"]

users_app = typer.Typer(help="Accounts of the coordinator's HTTP API (on the coordinator's host).")
KIT = typer.Option(
    None, help="The coordinator's kit, whose key signs the audit (default: HOME/kit-path)."
)
OPERATOR = typer.Option(None, help="Who makes the change, for the audit (default: login name).")
EXPIRES = typer.Option(90, "--expires-days", help="Days until the token expires.")


def _audit(home: Path, kit: Path | None) -> Any:
    """The coordinator's audit trail in ``home``; ConfigError-like FedcareError if no kit."""
    from fedcare.coordinator.audit_trail import CoordinatorAudit
    from fedcare.coordinator.files import recorded_kit
    from fedcare.errors import ConfigError

    kit = kit or recorded_kit(home)
    if kit is None or not (kit / "key.pem").is_file():
        raise ConfigError(
            f"no coordinator kit to sign the audit with: pass --kit (none recorded in {home})"
        )
    return CoordinatorAudit.open(home, kit, actor="operator-cli")


def _change(home: Path, db: str | None, kit: Path | None, operator: str | None, do: Any) -> Any:
    """Run ``do(store) -> (result, event, data)`` and audit ``event`` with the operator's name."""
    person = operator or getpass.getuser()
    try:
        with _store(home, db) as store:
            audit = _audit(home, kit)
            try:
                result, event, data = do(store)
                audit.person_action(event, person, **data)
            finally:
                audit.close()
    except FedcareError as err:
        raise fail(err) from None
    return result


@users_app.command("add")
def users_add(
    name: str,
    role: str = typer.Option(..., help="operator, study-lead or auditor."),
    expires_days: int = EXPIRES,
    home: Path = HOME,
    db: str | None = DB,
    kit: Path | None = KIT,
    operator: str | None = OPERATOR,
) -> None:
    """Make an account; print its token once (store it now: it cannot be shown again)."""

    def do(store: Any) -> Any:
        token = store.add_user(name, role, expires_days=expires_days)
        return token, "user-added", {"user": name, "role": role, "expires_days": expires_days}

    typer.echo(_change(home, db, kit, operator, do))


@users_app.command("list")
def users_list(home: Path = HOME, db: str | None = DB) -> None:
    """Accounts: name, role, created, expires, revoked (never tokens)."""
    try:
        with _store(home, db) as store:
            users = store.list_users()
    except FedcareError as err:
        raise fail(err) from None
    now = datetime.now(timezone.utc)
    for u in users:
        state = (
            f"revoked {u.revoked_at:%Y-%m-%d %H:%M}"
            if u.revoked_at
            else "expired"
            if u.expires_at <= now
            else "active"
        )
        typer.echo(
            f"{u.name}  {u.role}  created {u.created_at:%Y-%m-%d}  "
            f"expires {u.expires_at:%Y-%m-%d}  {state}"
        )


@users_app.command("revoke")
def users_revoke(
    name: str,
    home: Path = HOME,
    db: str | None = DB,
    kit: Path | None = KIT,
    operator: str | None = OPERATOR,
) -> None:
    """Revoke an account's token at once."""

    def do(store: Any) -> Any:
        return store.revoke_user(name), "user-revoked", {"user": name}

    _change(home, db, kit, operator, do)
    console.print(f"revoked {name}", highlight=False, soft_wrap=True)


@users_app.command("rotate")
def users_rotate(
    name: str,
    expires_days: int = EXPIRES,
    home: Path = HOME,
    db: str | None = DB,
    kit: Path | None = KIT,
    operator: str | None = OPERATOR,
) -> None:
    """Give an account a new token (printed once); the old token stops working."""

    def do(store: Any) -> Any:
        token = store.rotate_user(name, expires_days=expires_days)
        return token, "user-rotated", {"user": name, "expires_days": expires_days}

    typer.echo(_change(home, db, kit, operator, do))
