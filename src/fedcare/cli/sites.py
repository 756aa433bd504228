"""``fedcare sites``: every registered site and its state, as the coordinator's home says.

A site's state comes from its heartbeats with a stated liveness window (``connected``,
``stale (last seen …)``, ``never connected``), its registry status, and the coordinator kit's
revocation list (``revoked.json``), read here directly, so a site revoked or rotated shows so
at once, even if it never calls again: ``revoked (certificate S revoked at T)``, or
``…, rotated (new certificate since T)`` (with "the site has not connected with it yet" while
it still last presented its rotated-out certificate).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from fedcare.cli.common import _store, console, fail
from fedcare.cli.display import coordinator_line
from fedcare.cli.options import CA, COORDINATOR, DB, HOME, JSON
from fedcare.errors import FedcareError

__all__ = ["certificate_state", "site_state", "sites"]


def site_state(status: str, last_seen: datetime | None, now: datetime, liveness_s: float) -> str:
    """:func:`fedcare.coordinator.status_view.site_state` (imported lazily)."""
    from fedcare.coordinator.status_view import site_state as state

    return state(status, last_seen, now, liveness_s)


def certificate_state(site_id: str, serial: str, revocations: list[Any]) -> str | None:
    """:func:`fedcare.coordinator.site_view.certificate_state` (imported lazily)."""
    from fedcare.coordinator.site_view import certificate_state as state

    return state(site_id, serial, revocations)


def _revocations(home: Path, kit: Path | None) -> list[Any] | None:
    """:func:`fedcare.coordinator.site_view.revocation_list` (imported lazily)."""
    from fedcare.coordinator.site_view import revocation_list

    return revocation_list(home, kit)


def sites(
    ctx: typer.Context,
    home: Path = HOME,
    db: str | None = DB,
    liveness: float = typer.Option(
        30.0, help="Seconds of silence after which a site shows as stale (as for the coordinator)."
    ),
    kit: Path | None = typer.Option(
        None,
        help="The coordinator's kit, whose revoked.json says which sites are revoked or "
        "rotated (default: the kit the coordinator recorded in HOME/kit-path).",
    ),
    coordinator: str | None = COORDINATOR,
    ca: Path | None = CA,
    as_json: bool = JSON,
) -> None:
    """Registered sites: state (connected, or stale after --liveness seconds without a
    heartbeat; revoked or rotated, from the coordinator kit's revocation list), last seen,
    version, datasets. With --coordinator: as the coordinator's HTTP API reports them."""
    from fedcare.cli.common import echo_json
    from fedcare.cli.display import print_sites
    from fedcare.cli.remote import remote_client, remote_sites
    from fedcare.coordinator.site_view import full_site_state
    from fedcare.dashboard.views import site_entry

    client = remote_client(ctx, coordinator, ca)
    if client is not None:
        return remote_sites(client, as_json)
    try:
        revocations = _revocations(home, kit)
        with _store(home, db) as store:
            rows = store.list_sites()
            presence = store.coordinator_presence()
    except FedcareError as err:
        raise fail(err) from None
    now = datetime.now(timezone.utc)
    entries = []
    for s in rows:
        entries.append(site_entry(s, full_site_state(s, now, liveness, revocations)))
    if as_json:
        return echo_json(entries)
    if revocations is None:
        console.print(
            f"note: revocations not checked: no --kit given and {home / 'kit-path'} is missing",
            highlight=False,
            soft_wrap=True,
        )
    Console(emoji=False, soft_wrap=True, highlight=False).print(
        coordinator_line(presence, now), markup=False
    )
    print_sites(entries)
