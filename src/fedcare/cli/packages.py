"""``fedcare package build|inspect|verify``: study packages (issue 13, item 2).

Output is plain lines on stdout (never cut to the terminal's width); errors on stderr. Exit
codes: 0 the package verifies, 1 it does not (the reason is printed), 2 it could not be
built or read at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fedcare.errors import FedcareError

if TYPE_CHECKING:
    from cryptography import x509

package_app = typer.Typer(help="Build, inspect and verify signed study packages.")


def _error(err: Exception | str, code: int) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(code=code)


def _load_ca(path: Path) -> x509.Certificate:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as err:
        raise FedcareError(f"cannot read the CA certificate {path}: {err}") from None


@package_app.command("build")
def build(
    folder: Path = typer.Argument(..., help="The package folder (with fedcare-package.yaml)."),
    kit: Path = typer.Option(..., help="The researcher's kit (key.pem, cert.pem)."),
    out: Path = typer.Option(..., help="The archive to write (e.g. model-1.0.0.fcpkg)."),
) -> None:
    """Build a reproducible archive of FOLDER and sign it with the researcher's key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from fedcare.packages import build_package

    try:
        try:
            key = serialization.load_pem_private_key((kit / "key.pem").read_bytes(), None)
            cert = x509.load_pem_x509_certificate((kit / "cert.pem").read_bytes())
        except (OSError, ValueError) as err:
            raise FedcareError(f"cannot read the researcher kit {kit}: {err}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise FedcareError(f"the key in {kit} is not an ECDSA key")
        built = build_package(folder, out, key=key, cert=cert)
    except FedcareError as err:
        raise _error(err, 2) from None
    typer.echo(f"package {built.manifest.name} {built.manifest.version}")
    typer.echo(f"hash: {built.hash}")
    typer.echo(f"path: {built.path}")


@package_app.command("inspect")
def inspect(
    archive: Path = typer.Argument(..., help="A package archive."),
    ca: Path | None = typer.Option(None, help="The federation's ca.pem, to check the signer."),
) -> None:
    """Show a package's files, hash, signer, entry point, task, outputs and dependencies."""
    from fedcare.packages.signing import check_signer
    from fedcare.packages.verify import check_files, check_signature, read_package

    try:
        contents = read_package(archive)
        manifest = contents.manifest()
        ca_cert = _load_ca(ca) if ca is not None else None
    except FedcareError as err:
        raise _error(err, 2) from None
    cert = contents.certificate
    lines = [
        f"package: {manifest.name} {manifest.version}",
        f"hash: {contents.hash}",
        f"entry point: {manifest.entry_point}",
        f"task: {manifest.task}",
        f"outputs: params={'yes' if manifest.outputs.params else 'no'}, "
        f"metrics={', '.join(manifest.outputs.metrics) or 'none'}",
        f"dependencies: {', '.join(manifest.dependencies) or 'none'}",
        f"description: {manifest.description or '-'}",
        f"signer: {cert.subject.rfc4514_string()} (serial {cert.serial_number:x}, "
        f"valid to {cert.not_valid_after_utc:%Y-%m-%d})",
        "files:",
        *(f"  {f.sha256}  {f.size:>9}  {f.path}" for f in contents.listed),
    ]
    for line in lines:
        typer.echo(line)
    problem = None
    try:
        check_files(contents)
        check_signature(contents)
        if ca_cert is not None:
            check_signer(cert, ca_cert)
    except FedcareError as err:
        problem = str(err)
    if problem is not None:
        typer.echo(f"verified: NO: {problem}")
        raise typer.Exit(code=1)
    signer = "signer certified by the CA given" if ca_cert is not None else "signer NOT checked"
    typer.echo(f"verified: files and signature ok; {signer}" + ("" if ca else " (give --ca)"))


@package_app.command("verify")
def verify(
    archive: Path = typer.Argument(..., help="A package archive."),
    ca: Path = typer.Option(..., help="The federation's ca.pem."),
) -> None:
    """Verify files, signature and signer; exit 0 if the package verifies, 1 if not."""
    from fedcare.packages import verify_package

    try:
        ca_cert = _load_ca(ca)
    except FedcareError as err:
        raise _error(err, 2) from None
    try:
        package = verify_package(archive, ca_cert=ca_cert)
    except FedcareError as err:
        raise _error(f"{archive}: {err}", 1) from None
    typer.echo(
        f"verified: {package.manifest.name} {package.manifest.version} {package.hash} "
        f"signed by researcher {package.signer.researcher_id}"
    )
