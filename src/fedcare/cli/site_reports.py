"""``fedcare site reports``: list the reports a site wrote for itself only.

Saliency maps of image models (:mod:`fedcare.site.site_reports`) hold the site's own test
images: they are written under the site's state folder and never sent. This command lists
them (newest first) so the site can open them; heavy libraries load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from fedcare.cli.common import console, echo_json
from fedcare.cli.options import JSON

__all__ = ["register", "site_reports"]


def site_reports(
    state: Path = typer.Option(Path("site-state"), help="The site's state folder."),
    as_json: bool = JSON,
) -> None:
    """List the site-only reports (saliency maps) under the site's state folder."""
    from fedcare.site.site_reports import list_site_reports

    found = list(list_site_reports(state)) if state.is_dir() else []
    if as_json:
        return echo_json(found)
    if not found:
        console.print(f"no site-only reports under {state}", highlight=False, soft_wrap=True)
        return None
    console.print("site-only reports (nothing in them was sent):", highlight=False)
    for r in found:  # one line each, the path whole: it is what the user opens
        console.print(
            f"{r.get('created', '?')}  {r.get('study_id', '?')}  {r.get('kind', '?')} "
            f"({r.get('method', '?')}, {r.get('images', '?')} images)  {r['path']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    return None


def register(site_app: typer.Typer) -> None:
    """Add ``reports`` to ``fedcare site``."""
    site_app.command("reports")(site_reports)
