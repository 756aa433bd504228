"""`fedcare sites`: a site's state comes from its heartbeats, with a stated liveness window."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import update
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.cli.sites import site_state
from fedcare.coordinator.db import SiteRow
from fedcare.coordinator.engine import default_db_url
from fedcare.coordinator.store import CoordinatorStore

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def test_site_state_names_connected_stale_never_and_registry_status() -> None:
    assert site_state("active", NOW - timedelta(seconds=5), NOW, 30) == "connected"
    assert site_state("active", NOW - timedelta(minutes=8), NOW, 30) == (
        "stale (last seen 8 min ago)"
    )
    assert site_state("active", NOW - timedelta(seconds=45), NOW, 30) == (
        "stale (last seen 45 s ago)"
    )
    naive = (NOW - timedelta(hours=5)).replace(tzinfo=None)  # SQLite hands back naive UTC
    assert site_state("active", naive, NOW, 30) == "stale (last seen 5 h ago)"
    assert site_state("active", None, NOW, 30) == "never connected"
    assert site_state("revoked", NOW, NOW, 30) == "revoked"


def test_sites_shows_a_silent_site_as_stale(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        for site in ("fresh", "silent"):
            store.register_site(site, "ab12")
            store.touch_site(site)
        with store.engine.begin() as conn:  # silent since 8 minutes
            old = datetime.now(timezone.utc) - timedelta(minutes=8)
            conn.execute(update(SiteRow).where(SiteRow.id == "silent").values(last_seen=old))
    result = CliRunner().invoke(app, ["sites", "--home", str(home)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if "│" in line[:2]}
    assert "connected" in lines["fresh"], result.output
    assert "stale (last seen 8 min ago)" in lines["silent"], result.output


def test_certificate_state_reads_revocations_and_rotations() -> None:
    from fedcare.cli.sites import certificate_state
    from fedcare.transport.revocations import Revocation

    entries = [
        Revocation(0xA1, "east", "2026-12-04T10:00:00Z", "rotated"),
        Revocation(0xB2, "west", "2026-12-04T11:00:00Z", "revoked"),
    ]
    assert certificate_state("north", "c3", entries) is None
    assert certificate_state("west", "b2", entries) == (
        "revoked (certificate b2 revoked at 2026-12-04T11:00:00Z)"
    )
    assert certificate_state("east", "d4", entries) == (
        "rotated (new certificate since 2026-12-04T10:00:00Z)"
    )
    assert certificate_state("east", "a1", entries) == (
        "rotated (new certificate since 2026-12-04T10:00:00Z; the site has not connected with "
        "it yet)"
    )


def _states(home: Path, columns: str = "250") -> tuple[dict[str, str], str]:
    result = CliRunner().invoke(app, ["sites", "--home", str(home)], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.stdout.splitlines() if line.startswith("│")]
    return {cells[1].strip(): cells[2].strip() for cells in rows}, result.output


def test_sites_shows_revoked_and_rotated_sites_from_the_revocation_list(tmp_path: Path) -> None:
    from fedcare.coordinator.files import recorded_kit
    from fedcare.transport.provisioning import read_revocations, revoke_site, rotate_site

    from ..deployment.helpers import provision, running_coordinator
    from ..deployment.wire import hello, site_client

    kits = provision(tmp_path / "fed", ("east", "north", "west"), name="compass")
    home = tmp_path / "home"
    with running_coordinator(kits, home, liveness_s=600) as coordinator:
        address = f"127.0.0.1:{coordinator.port}"
        for site in ("east", "north", "west"):
            with site_client(kits.sites[site], address) as stub:
                hello(stub)
        assert recorded_kit(home) == kits.coordinator.resolve()
        revoked = revoke_site(kits.root, "west")  # the site never calls again
        old_serial = coordinator.store.get_site("east").cert_serial
        rotate_site(kits.root, "east")
        states, _ = _states(home)
        assert states["north"] == "connected"
        assert states["west"] == (
            f"revoked (certificate {revoked.serial:x} revoked at {revoked.revoked_at})"
        )
        entries = read_revocations(kits.coordinator / "revoked.json")
        rotated_at = next(e.revoked_at for e in entries if f"{e.serial:x}" == old_serial)
        assert states["east"] == (
            f"connected, rotated (new certificate since {rotated_at}; the site has not "
            "connected with it yet)"
        )
        with site_client(kits.sites["east"], address) as stub:  # the new kit
            hello(stub)
        states, _ = _states(home)
        assert states["east"] == f"connected, rotated (new certificate since {rotated_at})"
        _, narrow = _states(home, columns="80")
        assert "…" not in narrow, narrow  # wrapped, never cut


def test_sites_says_whether_the_coordinator_runs(tmp_path: Path) -> None:
    """Item 3: with the coordinator stopped, `fedcare sites` says so above the site states
    (before, every site read as it was last seen with no hint that nobody was listening)."""
    home = tmp_path / "home"
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        store.register_site("cleveland", "ab12")
        store.touch_site("cleveland")

    def first_line() -> str:
        result = CliRunner().invoke(app, ["sites", "--home", str(home)], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()[0]

    assert first_line() == (
        "coordinator: NOT running (it never started on this home); no site can connect"
    )
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        row = store.coordinator_started(listen="0.0.0.0:50051", host="hostA", pid=4242)
    assert first_line() == "coordinator: running at 0.0.0.0:50051 (pid 4242 on hostA)"
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        store.coordinator_stopped(row.id)
    line = first_line()
    assert re.match(r"coordinator: NOT running \(stopped \d+ s ago\); ", line), line
    assert line.endswith("the states below are as the sites were last seen"), line
