"""``fedcare study status`` says what a running study waits for (fedcare.coordinator.waiting)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.coordinator.server import default_db_url
from fedcare.coordinator.store import CoordinatorStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLAN = "3fa2" + "0" * 60
NOTE = (
    f"waiting: awaiting approval at hungary, va (plan {PLAN}; until 2026-12-05 17:00:00 UTC); "
    "asking again in 20 s\n"
    "cleveland withdrew: approval-revoked; not asked again before 2026-12-04 17:20:00 UTC"
)


def test_status_shows_what_a_running_study_waits_for(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    CoordinatorStore(default_db_url(home), home / "artifacts").close()  # as the coordinator does
    runner = CliRunner()
    args = ["study", "submit", str(EXAMPLES / "heart-disease.yaml"), "--home", str(home), "--queue"]
    submitted = runner.invoke(app, args)
    assert submitted.exit_code == 0, submitted.output
    study_id = submitted.stdout.strip().splitlines()[-1]
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        store.set_study_status(study_id, "running")
        store.note_study(study_id, NOTE)
    env, width = {"COLUMNS": "80"}, 80
    one = runner.invoke(app, ["study", "status", study_id[:8], "--home", str(home)], env=env,
                        terminal_width=width)  # fmt: skip
    assert one.exit_code == 0, one.output
    assert "  status: running\n" in one.stdout and "reason:" not in one.stdout
    assert f"\n  waiting: awaiting approval at hungary, va (plan {PLAN}; until " in one.stdout
    assert "\n  cleveland withdrew: approval-revoked; not asked again before 2026-12-04" in (
        one.stdout
    )
    every = runner.invoke(app, ["study", "status", "--home", str(home)], env=env,
                          terminal_width=width)  # fmt: skip
    assert f"{study_id}  heart-disease-fedavg  running  -/" in every.stdout, every.stdout
    assert "\n  waiting: awaiting approval at hungary, va" in every.stdout


def test_coordinator_start_offers_the_retry_backoff() -> None:
    result = CliRunner().invoke(app, ["coordinator", "start", "--help"], terminal_width=100)
    assert result.exit_code == 0 and "--retry-backoff" in result.output, result.output


def test_status_says_a_running_study_makes_no_progress_while_the_coordinator_is_down(
    tmp_path: Path,
) -> None:
    """Item 3: 'running' read while the coordinator is stopped is said to be stalled."""
    home = tmp_path / "home"
    home.mkdir()
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        study_id = store.create_study("s", {"rounds": 3}, 0)
        store.set_study_status(study_id, "running")
        row = store.coordinator_started(listen="127.0.0.1:1", host="h", pid=1)
    runner = CliRunner()
    live = runner.invoke(app, ["study", "status", "--home", str(home)])
    assert live.exit_code == 0 and "NOT running" not in live.output, live.output
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        store.coordinator_stopped(row.id)
    down = runner.invoke(app, ["study", "status", "--home", str(home)])
    assert down.exit_code == 0, down.output
    assert f"{study_id}  s  running  -/3" in down.stdout
    assert "note: coordinator: NOT running (stopped " in down.stderr
    assert "running and pending studies make no progress until it starts" in down.stderr
