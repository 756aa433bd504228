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
from rich.table import Table

from fedcare.cli.deploy import DB, HOME, _store, console, fail
from fedcare.cli.display import coordinator_line
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
) -> None:
    """Registered sites: state (connected, or stale after --liveness seconds without a
    heartbeat; revoked or rotated, from the coordinator kit's revocation list), last seen,
    version, datasets."""
    from fedcare.coordinator.site_view import full_site_state

    try:
        revocations = _revocations(home, kit)
        with _store(home, db) as store:
            rows = store.list_sites()
            presence = store.coordinator_presence()
    except FedcareError as err:
        raise fail(err) from None
    if revocations is None:
        console.print(
            f"note: revocations not checked: no --kit given and {home / 'kit-path'} is missing",
            highlight=False,
            soft_wrap=True,
        )
    now = datetime.now(timezone.utc)
    Console(soft_wrap=True, highlight=False).print(coordinator_line(presence, now), markup=False)
    table = Table("site", "state", "last seen (UTC)", "version", "datasets")
    for column in table.columns:  # wrap long cells, never cut them with …
        column.overflow = "fold"
    for s in rows:
        seen = s.last_seen.strftime("%Y-%m-%d %H:%M:%S") if s.last_seen else "never"
        state = full_site_state(s, now, liveness, revocations)
        table.add_row(s.id, state, seen, s.version or "", ", ".join(sorted(s.datasets or {})))
    Console().print(table)
