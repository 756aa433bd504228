"""`fedcare sites`: a site's state comes from its heartbeats, with a stated liveness window."""

from __future__ import annotations

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
