"""``fedcare users add|list|revoke|rotate`` on a real coordinator home, audited."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.coordinator.files import record_kit
from fedcare.coordinator.store import CoordinatorStore

from ..deployment.helpers import provision


def _home(tmp_path: Path) -> Path:
    kits = provision(tmp_path / "fed", sites=("hungary",))
    home = tmp_path / "home"
    home.mkdir()
    CoordinatorStore(f"sqlite:///{home / 'coordinator.db'}", home / "artifacts").close()
    record_kit(home, kits.coordinator)
    return home


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["users", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_users_add_list_rotate_revoke_are_audited(tmp_path: Path) -> None:
    home = _home(tmp_path)
    common = ["--home", str(home), "--operator", "olga"]
    code, out = _run("add", "lea", "--role", "study-lead", "--expires-days", "7", *common)
    assert code == 0, out
    token = out.strip()
    assert token.startswith("fc_") and len(token) > 50
    with CoordinatorStore(f"sqlite:///{home / 'coordinator.db'}", home / "artifacts") as store:
        assert store.authenticate(token).name == "lea"  # type: ignore[union-attr]
    code, out = _run("list", "--home", str(home))
    assert code == 0 and "lea  study-lead" in out and "active" in out and token not in out
    code, out = _run("rotate", "lea", *common)
    assert code == 0 and out.strip() != token and out.strip().startswith("fc_")
    code, out = _run("revoke", "lea", *common)
    assert code == 0
    code, out = _run("list", "--home", str(home))
    assert "revoked" in out
    code, out = _run("add", "lea", "--role", "auditor", *common)
    assert code == 2 and "already exists" in out
    code, out = _run("add", "max", "--role", "root", *common)
    assert code == 2 and "role must be one of" in out
    lines = (home / "audit.jsonl").read_text().splitlines()
    events = [(e["event"], e["data"]["person"], e["data"]["user"]) for e in map(json.loads, lines)]
    assert events == [
        ("user-added", "olga", "lea"),
        ("user-rotated", "olga", "lea"),
        ("user-revoked", "olga", "lea"),
    ]


def test_users_refuse_a_folder_that_is_not_a_coordinator_home(tmp_path: Path) -> None:
    code, out = _run("add", "lea", "--role", "auditor", "--home", str(tmp_path / "nope"))
    assert code == 2 and "is not a coordinator home" in out
