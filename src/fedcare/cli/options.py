"""Options shared by the commands that read a coordinator's home or ask its HTTP API."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["CA", "COORDINATOR", "DB", "HOME", "JSON"]

HOME = typer.Option(Path("coordinator-home"), help="The coordinator's home folder.")
DB = typer.Option(None, help="Database URL (default: SQLite in HOME).")
COORDINATOR = typer.Option(
    None,
    "--coordinator",
    envvar="FEDCARE_COORDINATOR",
    help="Ask this coordinator's HTTP API (https://HOST:PORT) instead of reading --home; "
    "the token comes from FEDCARE_TOKEN or the client config file, never an option.",
)
CA = typer.Option(
    None,
    "--ca",
    envvar="FEDCARE_CA",
    help="The federation's ca.pem, to trust the coordinator's certificate (remote only).",
)
JSON = typer.Option(False, "--json", help="Print JSON (the HTTP API's shapes) instead of text.")
