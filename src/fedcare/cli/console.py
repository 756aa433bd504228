"""``fedcare site console``: the data steward's web console over a site home.

Serves :func:`fedcare.dashboard.console.create_console_app` on 127.0.0.1 (plain HTTP: only
this machine can reach it). ``--host`` with another address exposes it to the network: then
it needs ``--cert`` and ``--key`` (HTTPS) or it refuses to start. The sign-in token is created
in the site home at the first start (``HOME/console-token``, mode 0600) and printed once.
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["site_console"]


def site_console(
    home: Path = typer.Option(
        Path("site-state"),
        "--home",
        "--state",
        help="The site's home: its state folder (as `site start --state`).",
    ),
    port: int = typer.Option(8765, help="Port to serve on."),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to serve on; anything but a loopback address exposes the console to "
        "the network and needs --cert and --key.",
    ),
    kit: Path | None = typer.Option(
        None,
        help="This site's startup kit (its key seals decisions); default: the kit the agent "
        "last started with (HOME/kit-path).",
    ),
    policy: Path | None = typer.Option(
        None, help="The site's policy file to show; default: the one the agent last started with."
    ),
    cert: Path | None = typer.Option(
        None, help="TLS certificate (PEM), for a non-loopback --host."
    ),
    key: Path | None = typer.Option(None, help="TLS private key (PEM), with --cert."),
) -> None:
    """Serve the site console (plans to decide on, policy, privacy budget, audit, studies)
    until Ctrl-C."""
    from fedcare.cli.common import _stop_on_signals, console, fail
    from fedcare.dashboard.console import create_console_app
    from fedcare.dashboard.console_auth import TOKEN_FILE, ensure_token
    from fedcare.dashboard.serve import is_loopback, serve_api, serve_http
    from fedcare.errors import ConfigError, FedcareError
    from fedcare.site.stewardship import recorded_kit

    stop = _stop_on_signals()
    try:
        if not home.is_dir():
            raise ConfigError(f"{home} is not a site home (no such folder); give --home")
        if (cert is None) != (key is None):
            raise ConfigError("give both --cert and --key, or neither")
        loopback = is_loopback(host)
        if not loopback and cert is None:
            raise ConfigError(
                f"--host {host} exposes the console to the network: give --cert and --key to "
                "serve it over HTTPS (plain HTTP is served on 127.0.0.1 only)"
            )
        site_kit = recorded_kit(home, kit)
        token, created = ensure_token(home)
        app = create_console_app(
            home, site_kit, token, policy_file=policy, secure_cookie=cert is not None
        )
        if cert is not None and key is not None:
            server = serve_api(app, host, port, cert, key)
        else:
            server = serve_http(app, host, port)
    except FedcareError as err:
        raise fail(err) from None
    if not loopback:
        console.print(
            f"[yellow]warning:[/yellow] --host {host}: the console is reachable from the "
            "network (over HTTPS); anyone with the token can decide on plans"
        )
    if created:
        console.print(
            f"console token (shown once; kept in {home / TOKEN_FILE}, mode 0600):",
            highlight=False,
            soft_wrap=True,
        )
        typer.echo(token)
    scheme = "https" if cert is not None else "http"
    where = f"[{host}]" if ":" in host else host
    console.print(f"site console on {scheme}://{where}:{server.port}/ (Ctrl-C stops it)",
                  highlight=False, soft_wrap=True)  # fmt: skip
    stop.wait()
    server.stop()
