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
    """``revoked (…)`` or ``rotated (new certificate since …)`` from the coordinator's
    revocation list (``revoked.json`` entries), or None. ``serial`` is the one the site last
    presented at Hello (hex): still a rotated-out one means its new kit is not in use yet."""
    mine = [e for e in revocations if e.site_id == site_id]
    revoked = [e for e in mine if e.reason != "rotated"]
    if revoked:
        return f"revoked (certificate {revoked[-1].serial:x} revoked at {revoked[-1].revoked_at})"
    rotated = [e for e in mine if e.reason == "rotated"]
    if not rotated:
        return None
    unused = serial in {f"{e.serial:x}" for e in rotated}
    note = "; the site has not connected with it yet" if unused else ""
    return f"rotated (new certificate since {rotated[-1].revoked_at}{note})"


def _revocations(home: Path, kit: Path | None) -> list[Any] | None:
    """The entries of the coordinator kit's ``revoked.json`` (``kit``, else the kit the
    coordinator recorded in ``home``); None when no kit is known."""
    from fedcare.coordinator.files import recorded_kit
    from fedcare.transport.revocations import read_revocations

    kit = kit or recorded_kit(home)
    if kit is None:
        return None
    if not (kit / "revoked.json").is_file():
        raise FedcareError(f"{kit} holds no revoked.json: pass the coordinator's kit as --kit")
    return read_revocations(kit / "revoked.json")


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
        state = site_state(s.status, s.last_seen, now, liveness)
        cert = certificate_state(s.id, s.cert_serial, revocations or [])
        if cert is not None and s.status != "revoked":
            state = cert if cert.startswith("revoked") else f"{state}, {cert}"
        entries.append(site_entry(s, state))
    if as_json:
        return echo_json(entries)
    if revocations is None:
        console.print(
            f"note: revocations not checked: no --kit given and {home / 'kit-path'} is missing",
            highlight=False,
            soft_wrap=True,
        )
    Console(soft_wrap=True, highlight=False).print(coordinator_line(presence, now), markup=False)
    print_sites(entries)
