"""``fedcare site doctor``: check a site's kit, data, state and connection, one line each.

Every check prints ``NAME: ok (…)``, ``NAME: FAILED: reason`` or ``NAME: skipped (why)``; the
command exits 0 when none failed, else 1. The network checks are those the agent runs when a
connection fails (:mod:`fedcare.transport.diagnose`); the last one calls the coordinator's
``Check`` RPC, which says whether it accepts this site's certificate and writes nothing (so the
doctor never makes a stopped site look alive).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

__all__ = ["quiet_grpc", "site_doctor"]

#: Seconds each network step may take.
TIMEOUT_S = 5.0
#: A certificate expiring sooner than this is reported (still ok).
RENEW_DAYS = 30
ACCEPTS = "coordinator accepts this site"


def quiet_grpc() -> None:
    """Silence gRPC's C-core log lines (set before grpc is imported); the agent names causes
    itself. ``GRPC_VERBOSITY=INFO`` in the environment brings them back for debugging."""
    if not os.environ.get("GRPC_VERBOSITY"):
        os.environ["GRPC_VERBOSITY"] = "NONE"


class _Skip(Exception):
    """A check that cannot run (its reason is printed as ``skipped``)."""


def _check_kit(kit: Path) -> str:
    from fedcare.transport.diagnose import check_kit_files

    site = check_kit_files(kit)
    return f"site {site}, files {', '.join(sorted(p.name for p in kit.iterdir() if p.is_file()))}"


def _check_certificate(kit: Path) -> tuple[Any, str]:
    from fedcare.transport.tls import load_kit

    loaded = load_kit(kit)
    left = (loaded.expires - dt.datetime.now(dt.timezone.utc)).days
    note = "; renew it soon (`fedcare provision rotate`)" if left < RENEW_DAYS else ""
    return loaded, (
        f"serial {loaded.serial:x}, signed by the kit's CA (federation {loaded.federation}), "
        f"key matches, expires {loaded.expires:%Y-%m-%d} (in {left} days){note}"
    )


def _check_data(data: Path) -> str:
    from fedcare.site.config import SiteDataConfig

    described = SiteDataConfig.from_yaml(data).describe()
    parts = []
    for name, info in sorted(described.items()):
        rows = sum(int(info.get(k, 0)) for k in ("num_train", "num_test"))
        parts.append(f"{name}: {rows} rows" if rows else name)
    return "; ".join(parts) or "no datasets"


def _check_state(state: Path) -> str:
    folder = state
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".fedcare-doctor-"):
        pass
    return f"{state} is writable" if folder == state else f"{state} can be created in {folder}"


def _network(kit: Any, address: str) -> list[tuple[str, Callable[[], str]]]:
    """The network checks in order; each raises with the diagnosis' cause."""
    from fedcare.transport import diagnose as d

    host, port = d.split_address(address)

    def fail_on(step: Callable[[], Any]) -> Any:
        try:
            return step()
        except d.Unreachable as failed:  # the cause, as the agent logs it
            raise RuntimeError(failed.cause.message) from None

    def resolve() -> str:
        infos = fail_on(lambda: d.resolve(host, port))
        return f"{host} is {', '.join(sorted({str(a[0]) for _, a in infos}))}"

    def connect() -> str:
        fail_on(lambda: d.connect(host, port, TIMEOUT_S)).close()
        return f"{host}:{port} accepts connections"

    def handshake() -> str:
        subject = fail_on(lambda: d.tls_handshake(kit, host, port, TIMEOUT_S))
        return f"the coordinator is {subject}, signed by this kit's CA"

    return [
        ("name resolution", resolve),
        ("TCP connect", connect),
        ("TLS handshake", handshake),
        (ACCEPTS, lambda: _check_call(kit, address)),
    ]


def _check_call(kit: Any, address: str) -> str:
    import grpc

    from fedcare.transport.diagnose import explain_refusal
    from fedcare.transport.grpc import fedcare_pb2 as pb
    from fedcare.transport.grpc.fedcare_pb2_grpc import CoordinatorStub
    from fedcare.transport.tls import channel_credentials

    with grpc.secure_channel(address, channel_credentials(kit.path)) as channel:
        try:
            answer = CoordinatorStub(channel).Check(pb.CheckRequest(), timeout=TIMEOUT_S)
        except grpc.RpcError as err:
            code, details = err.code(), str(err.details())
            if code == grpc.StatusCode.UNIMPLEMENTED:
                raise _Skip("the coordinator is older than this agent (no Check call)") from None
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise RuntimeError(explain_refusal(kit.identity, details, kit).message) from None
            raise RuntimeError(f"{code.name}: {details}") from None
    if answer.site_status in ("revoked", "withdrawn"):
        raise RuntimeError(f"the coordinator lists site {answer.site_id} as {answer.site_status}")
    status = (
        "not registered yet: its agent registers at its first Hello"
        if answer.site_status == "unregistered"
        else f"registered, {answer.site_status}"
    )
    return f"site {answer.site_id} of federation {answer.federation}; {status}"


def _run(name: str, check: Callable[[], str]) -> bool:
    """Print one check's line; True unless it failed."""
    try:
        detail = check()
    except _Skip as why:
        typer.echo(f"{name}: skipped ({why})")
        return True
    except Exception as err:  # every failure is reported as a line, never a traceback
        typer.echo(f"{name}: FAILED: {' '.join(str(err).split()) or type(err).__name__}")
        return False
    typer.echo(f"{name}: ok ({detail})")
    return True


def site_doctor(
    kit: Path = typer.Option(..., help="This site's startup kit."),
    data: Path | None = typer.Option(None, help="Site data file to check (as for `site start`)."),
    state: Path | None = typer.Option(None, help="The site's state folder to check."),
    coordinator: str | None = typer.Option(None, help="host:port (default: from the kit)."),
) -> None:
    """Check this site's kit, data, state folder and connection to the coordinator.

    One line per check (ok / FAILED: reason / skipped); exit 0 when none failed, else 1.
    """
    quiet_grpc()
    results = [_run("kit files and role", lambda: _check_kit(kit))]
    loaded: list[Any] = []

    def certificate() -> str:
        if not results[0]:
            raise _Skip("the kit is not a usable site kit")
        found, detail = _check_certificate(kit)
        loaded.append(found)
        return detail

    results.append(_run("certificate", certificate))
    results.append(_run("data", _optional(data, "no --data given", _check_data)))
    results.append(_run("state folder", _optional(state, "no --state given", _check_state)))
    address = coordinator or (loaded[0].coordinator_address if loaded else "")
    if not loaded or not address:
        why = "no usable kit" if not loaded else "the kit names no coordinator; pass one"
        for name in ("name resolution", "TCP connect", "TLS handshake", ACCEPTS):
            results.append(_run(name, _skipped(why)))
    else:
        ok = True
        for name, check in _network(loaded[0], address):
            ok = _run(name, check if ok else _skipped("an earlier check failed")) and ok
            results.append(ok)
    raise typer.Exit(code=0 if all(results) else 1)


def _optional(value: Path | None, why: str, check: Callable[[Path], str]) -> Callable[[], str]:
    def run() -> str:
        if value is None:
            raise _Skip(why)
        return check(value)

    return run


def _skipped(why: str) -> Callable[[], str]:
    def run() -> str:
        raise _Skip(why)

    return run
