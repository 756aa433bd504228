"""``fedcare data check``: harmonize a site's table, validate it, and write the site's report."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fedcare.errors import FedcareError

__all__ = ["data_app"]

data_app = typer.Typer(help="Check a site's data against a study's common data model.")
console = Console(emoji=False, stderr=True)
#: Exit codes: the data failed a required check; the schema, mapping or data could not be used.
EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2


def _table(report: object) -> Table:
    from fedcare.data.cdm import SiteReport

    assert isinstance(report, SiteReport)
    table = Table(title=f"data check: {report.site or 'site'} against {report.schema}")
    for column in ("variable", "type", "unit", "missing", "out of range", "unmapped", "type err"):
        table.add_column(column, justify="left" if column in ("variable", "type") else "right")
    for v in report.variables:
        table.add_row(
            v.name,
            v.type,
            v.unit or "",
            f"{v.missing}/{v.n}",
            str(v.out_of_range),
            str(sum(v.unmapped_codes.values())),
            str(v.type_errors),
        )
    return table


@data_app.command("check")
def check(
    schema: Path = typer.Option(..., help="The study's schema file (YAML)."),
    mapping: Path = typer.Option(..., help="This site's mapping file (YAML)."),
    data: Path = typer.Option(..., help="A CSV or Parquet file, or a loader source YAML."),
    out: Path | None = typer.Option(
        None, help="Folder for report.json, report.md, report.html and shareable.json."
    ),
) -> None:
    """Check a site's data; exit 1 with the reason when a required check fails."""
    from fedcare.data.cdm import Schema, SiteMapping, check_table, read_table

    try:
        cdm = Schema.from_yaml(schema)
        site_mapping = SiteMapping.from_yaml(mapping)
        report = check_table(read_table(data, site_mapping), cdm, site_mapping).report
    except FedcareError as err:
        console.print(f"[red]error:[/red] {err}", soft_wrap=True)
        raise typer.Exit(code=EXIT_ERROR) from None
    console.print(_table(report))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(report.to_json(), encoding="utf-8")
        (out / "report.md").write_text(report.to_markdown(), encoding="utf-8")
        (out / "report.html").write_text(report.to_html(), encoding="utf-8")
        shareable = json.dumps(report.shareable(), indent=2, allow_nan=False)
        (out / "shareable.json").write_text(shareable, encoding="utf-8")
        console.print(f"report: {out / 'report.html'} (shareable counts: {out / 'shareable.json'})")
    if not report.passed:
        console.print(f"[red]{report.summary}[/red]", soft_wrap=True)
        raise typer.Exit(code=EXIT_CHECK_FAILED)
    console.print(report.summary)


@data_app.command("fixture")
def fixture(
    out: Path = typer.Option(..., help="Folder for one CSV file per fixture site."),
    seed: int = typer.Option(..., help="Seed of the fixture federation (required: no default)."),
    rows: int = typer.Option(300, min=1, help="Rows per site."),
) -> None:
    """Write the fixture federation's raw site tables (examples/cdm/fixture maps them)."""
    import numpy as np

    from fedcare.data.cdm.fixtures import fixture_federation

    out.mkdir(parents=True, exist_ok=True)
    tables = fixture_federation(np.random.default_rng(seed), rows_per_site=rows)
    for site, table in tables.items():
        table.to_csv(out / f"{site}.csv", index=False)
        console.print(f"{site}: {out / f'{site}.csv'} ({len(table)} rows)")
