"""What the command modules share: the error console, ``error: REASON`` exits, the store of
a coordinator home, JSON output. A leaf of ``fedcare.cli``: it imports no other command module
(deploy, remote, sites... all import it, never each other in a circle)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

__all__ = [
    "_stop_on_signals",
    "_store",
    "console",
    "echo_json",
    "fail",
    "print_warnings",
    "report_written",
]

console = Console(emoji=False, stderr=True)


def fail(err: Exception) -> typer.Exit:
    """Print ``error: REASON`` (on one line whatever the terminal width) and exit 2."""
    console.print("[red]error:[/red] ", end="")
    console.print(str(err), markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _store(home: Path, db: str | None) -> Any:
    """The store of an existing coordinator home; refused (never created) if HOME is not one."""
    from fedcare.coordinator.home import open_home

    return open_home(home, db)


def print_warnings(warnings: list[str]) -> None:
    """The warnings of a study queued with ``--queue``, one line each on stderr."""
    for warning in warnings:
        console.print("[yellow]warning:[/yellow] queued anyway (--queue): ", end="")
        console.print(warning, markup=False, highlight=False, soft_wrap=True)


def report_written(
    results: dict[str, Any], paths: tuple[Path, Path], study_id: str, as_json: bool
) -> None:
    """Say where the report went (``--json``: on stdout); exit 1 if the study failed."""
    from fedcare.cli.display import readable_reason

    if as_json:
        echo_json({"results": str(paths[0]), "report": str(paths[1])})
    else:
        console.print(f"results: {paths[0]}\nreport:  {paths[1]}", highlight=False, soft_wrap=True)
    study = results.get("study", {})
    if study.get("status") == "failed":
        reason = readable_reason(study.get("reason") or "no reason recorded")
        console.print(f"[red]study {study_id} FAILED:[/red] ", end="", soft_wrap=True)
        console.print(reason, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)


def echo_json(data: Any, *, lines: bool = False) -> None:
    """``data`` as JSON on stdout: indented, or on one line (``lines``: JSON lines)."""
    from fedcare.cli.output import jsonable

    typer.echo(json.dumps(jsonable(data), indent=None if lines else 2, allow_nan=False))
