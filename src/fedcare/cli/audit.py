"""``fedcare audit verify|export``: check a site's or the coordinator's audit log."""

from __future__ import annotations

from pathlib import Path

import typer

from fedcare.errors import FedcareError

audit_app = typer.Typer(help="Verify and export tamper-evident audit logs.")


def _cert(certs: list[Path], kit: Path | None) -> list[Path] | None:
    """The signer's certificates, oldest first: the ``--cert`` ones, then the kit's (with the
    earlier ones a rotated kit keeps under ``previous/``)."""
    from fedcare.transport.kit_history import kit_certs

    paths = [*certs, *(kit_certs(kit) if kit is not None else [])]
    return paths or None


def _warn(warnings: tuple[str, ...]) -> None:
    for text in warnings:
        typer.echo(f"warning: {text}", err=True)


@audit_app.command("verify")
def verify(
    log: Path = typer.Argument(..., help="The audit log (JSON lines)."),
    cert: list[Path] = typer.Option(
        [], help="The signer's certificate (PEM); repeat for earlier keys, oldest first."
    ),
    kit: Path | None = typer.Option(
        None, help="The signer's startup kit (its cert.pem and earlier certificates)."
    ),
    witness: list[str] = typer.Option(
        [], help="A checkpoint SEQ:HASH of this log that someone else kept (repeatable)."
    ),
    anchors: Path | None = typer.Option(
        None,
        help="Heads of this log the other side countersigned (JSON lines; default: "
        "audit-anchors.jsonl beside the log, which a site agent keeps).",
    ),
) -> None:
    """Check every entry, the hash chain, the signatures and the head checkpoint, and that the
    log still holds every anchored head (so a rollback to an older copy fails).

    Exit 0 and "ok: N entries" when the log is intact; exit 1 naming the first bad entry.
    """
    from fedcare.audit.check import check_log

    try:
        check = check_log(log, cert_path=_cert(cert, kit), witness=witness, anchors=anchors)
    except FedcareError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    result, held, book = check.result, check.anchors, check.book
    _warn(result.warnings)
    if not result.ok:
        typer.echo(f"FAILED: {result.reason}")
        raise typer.Exit(code=1)
    unchecked = "" if result.signatures_checked else " (signatures NOT checked: no --cert/--kit)"
    typer.echo(f"ok: {result.count} entries{unchecked}")
    if held:
        typer.echo(f"anchors: the log holds all {held} countersigned heads in {book}")
    typer.echo(f"checkpoint: {result.checkpoint}")


@audit_app.command("export")
def export(
    log: Path = typer.Argument(..., help="The audit log (JSON lines)."),
    out: Path = typer.Option(..., help="The JSON lines file to write."),
    cert: list[Path] = typer.Option(
        [], help="The signer's certificate (PEM); repeat for earlier keys, oldest first."
    ),
    kit: Path | None = typer.Option(None, help="The signer's startup kit (uses its cert.pem)."),
    event: list[str] = typer.Option(
        [],
        help="Keep only this event (repeat for more); a name the log lacks is refused, "
        "naming the events it holds.",
    ),
    since: str | None = typer.Option(None, help="Keep entries at or after this ISO time."),
    until: str | None = typer.Option(None, help="Keep entries before this ISO time."),
    force: bool = typer.Option(False, help="Export even if verification fails (marked)."),
) -> None:
    """Verify the log, then write its entries as JSON lines.

    An ``--event`` that no entry of the log has (``approval-revoked`` for ``revocation``) is
    refused (exit 2) with the event names the log holds, rather than writing 0 entries.
    """
    from fedcare.audit import export_log
    from fedcare.audit.check import event_names

    unknown = sorted(set(event) - (known := event_names(log))) if event else []
    if unknown and known:  # a missing log is export_log's error
        names = ", ".join(sorted(known))
        typer.echo(f"error: unknown --event {', '.join(unknown)}; this log's events: {names}",
                   err=True)  # fmt: skip
        raise typer.Exit(code=2)
    try:
        result = export_log(
            log,
            out,
            cert_path=_cert(cert, kit),
            events=event or None,
            since=since,
            until=until,
            force=force,
        )
    except FedcareError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None
    _warn(result.verification.warnings)
    check = result.verification
    state = "verified" if check.ok else f"NOT verified: {check.reason}"
    if not check.signatures_checked:
        state += ", signatures NOT checked: no --cert/--kit"
    typer.echo(f"wrote {result.written} entries to {out} ({state})")
