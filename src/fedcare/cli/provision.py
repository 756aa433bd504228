"""``fedcare provision``: a federation's CA, kits and certificates (new, add, rotate, revoke)."""

from __future__ import annotations

from pathlib import Path

import typer

from fedcare.cli.common import console, fail
from fedcare.errors import FedcareError

provision_app = typer.Typer(help="Create and manage a federation's certificates and kits.")


@provision_app.command("new")
def provision_new(
    root: Path = typer.Argument(..., help="Folder for the CA and the startup kits."),
    name: str = typer.Option(..., help="Federation name."),
    site: list[str] = typer.Option([], help="A site id (repeat for each site)."),
    host: list[str] = typer.Option(["localhost", "127.0.0.1"], help="Coordinator host names/IPs."),
    port: int = typer.Option(50051, help="Coordinator port written into site kits."),
    he: bool = typer.Option(
        False, "--he", help="Also make the HE key pair for privacy mode 'encrypted' (tenseal)."
    ),
) -> None:
    """Create a federation: CA, coordinator kit and one kit per site."""
    from fedcare.transport.provisioning import create_federation

    try:
        fed = create_federation(
            root,
            name=name,
            sites=site,
            coordinator_hosts=tuple(host),
            coordinator_port=port,
            he=he,
        )
    except FedcareError as err:
        raise fail(err) from None
    console.print(f"federation {fed.name!r}: coordinator kit {fed.coordinator_kit}")
    for site_id, kit in fed.site_kits.items():
        console.print(f"  site {site_id}: {kit}")


@provision_app.command("add-site")
def provision_add(root: Path, site_id: str) -> None:
    """Issue a kit for a new site (with the HE secret, if the federation has one)."""
    from fedcare.transport.provisioning import add_site

    try:
        console.print(f"site {site_id}: {add_site(root, site_id)}")
    except FedcareError as err:
        raise fail(err) from None


@provision_app.command("add-researcher")
def provision_add_researcher(root: Path, name: str) -> None:
    """Issue a researcher kit (a key and certificate to sign study packages with)."""
    from fedcare.transport.researchers import add_researcher

    try:
        console.print(f"researcher {name}: {add_researcher(root, name)}", soft_wrap=True)
    except FedcareError as err:
        raise fail(err) from None


@provision_app.command("rotate")
def provision_rotate(root: Path, site_id: str) -> None:
    """Give a site a new key and certificate; its old certificate is revoked."""
    from fedcare.transport.provisioning import rotate_site

    try:
        console.print(f"site {site_id}: new kit {rotate_site(root, site_id)}")
    except FedcareError as err:
        raise fail(err) from None


@provision_app.command("revoke")
def provision_revoke(root: Path, site_id: str) -> None:
    """Revoke a site's certificate; the coordinator refuses it from its next call."""
    from fedcare.transport.provisioning import revoke_site

    try:
        entry = revoke_site(root, site_id)
    except FedcareError as err:
        raise fail(err) from None
    from fedcare.cli.display import hex_serial

    console.print(
        f"revoked {site_id}: certificate serial {hex_serial(entry.serial)} "
        f"(at {entry.revoked_at}, {entry.reason})",
        highlight=False,
        soft_wrap=True,
    )
