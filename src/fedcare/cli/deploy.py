"""``fedcare coordinator|site|study``: run a real federation (``provision``: cli/provision.py)."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from fedcare.errors import FedcareError

console = Console(stderr=True)
coordinator_app = typer.Typer(help="Run the coordinator.")
site_app = typer.Typer(help="Run a site agent.")
study_app = typer.Typer(help="Submit and follow studies (on the coordinator's host).")


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


# --- coordinator and site ------------------------------------------------------------------------
@coordinator_app.command("start")
def coordinator_start(
    kit: Path = typer.Option(..., help="The coordinator's startup kit."),
    home: Path = typer.Option(Path("coordinator-home"), help="Database and artifacts folder."),
    listen: str = typer.Option("127.0.0.1:50051", help="host:port to serve sites on."),
    db: str | None = typer.Option(None, help="Database URL (default: SQLite in HOME)."),
    liveness: float = typer.Option(30.0, help="Seconds after which a silent site is away."),
    heartbeat: float = typer.Option(5.0, help="Seconds between a site's heartbeats."),
    round_retries: int = typer.Option(3, help="Retries of a round that fails before giving up."),
    retry_backoff: float = typer.Option(
        5.0, help="Seconds before the first retry of a failed round (doubling, at most 60)."
    ),
    api_port: int | None = typer.Option(
        None,
        help="Also serve the HTTP API (https, the kit's certificate) on this port, on the "
        "host of --listen; off unless given. Accounts: `fedcare users add`.",
    ),
) -> None:
    """Serve sites and run studies until SIGINT/SIGTERM; studies resume after a restart."""
    from fedcare.coordinator.server import Coordinator
    from fedcare.coordinator.waiting import Backoff

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = _stop_on_signals()
    try:
        coordinator = Coordinator(
            kit,
            home,
            listen=listen,
            db_url=db,
            liveness_s=liveness,
            heartbeat_s=heartbeat,
            round_retries=round_retries,
            retry_backoff=Backoff(max(retry_backoff, 0.0), max(retry_backoff, 60.0)),
        ).start()
    except FedcareError as err:
        raise fail(err) from None
    console.print(f"coordinator listening on port {coordinator.port}", highlight=False)
    api = None
    if api_port is not None:
        try:
            api = _start_api(coordinator, kit, home, listen.rsplit(":", 1)[0], api_port, liveness)
        except FedcareError as err:
            coordinator.stop()
            raise fail(err) from None
    stop.wait()
    if api is not None:
        api.stop()
    coordinator.stop()


@site_app.command("start")
def site_start(
    kit: Path = typer.Option(..., help="This site's startup kit."),
    data: Path = typer.Option(..., help="Site data file (YAML: datasets by name)."),
    state: Path = typer.Option(Path("site-state"), help="Folder for the site's own state."),
    coordinator: str | None = typer.Option(None, help="host:port (default: from the kit)."),
    time_limit: float = typer.Option(600.0, help="Seconds a task may run."),
    poll_wait: float = typer.Option(5.0, help="Seconds each long-poll for a task may wait."),
    policy: Path | None = typer.Option(None, help="Site policy (YAML); default: allow approved."),
    approve_all: bool = typer.Option(
        False, "--approve-all", help="DEVELOPMENT ONLY: run every plan unapproved (audited)."
    ),
) -> None:
    """Connect to the coordinator (outbound only) and serve tasks until SIGINT/SIGTERM.

    Only training plans the steward approved run (`fedcare site approve`), within the policy.
    The kit is checked first (a site kit, its certificate valid); a failed connection is named
    in one line (`fedcare site doctor` runs the same checks on demand).
    """
    from fedcare.cli.doctor import quiet_grpc

    quiet_grpc()  # before grpc is imported: the agent names connection failures itself
    from fedcare.cli.governance import build_governance
    from fedcare.site.agent import SiteAgent
    from fedcare.site.config import SiteDataConfig
    from fedcare.transport.diagnose import load_site_kit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = _stop_on_signals()
    try:
        load_site_kit(kit)  # before the state folder is touched
        governance = build_governance(state, kit, policy, approve_all=approve_all)
        if approve_all:
            console.print("[yellow]warning:[/yellow] --approve-all: plans run unapproved")
        agent = SiteAgent(
            kit,
            SiteDataConfig.from_yaml(data),
            state_dir=state,
            coordinator=coordinator,
            time_limit=time_limit,
            governance=governance,
        )
        agent.run(stop)
    except FedcareError as err:
        raise fail(err) from None


# --- studies -------------------------------------------------------------------------------
def _start_api(
    coordinator: Any, kit: Path, home: Path, host: str, port: int, liveness_s: float
) -> Any:
    """Serve the HTTP API of a started coordinator (its store and audit) over TLS with its
    kit's certificate on ``host:port``; print where. Returns the server (``stop()`` it)."""
    from fedcare.dashboard.api import create_app
    from fedcare.dashboard.serve import serve_api

    app = create_app(coordinator.store, coordinator.audit, home=home, liveness_s=liveness_s)
    api = serve_api(app, host, port, kit / "cert.pem", kit / "key.pem")
    console.print(
        f"HTTP API on https://{host}:{api.port}/api/v1, dashboard on https://{host}:{api.port}/",
        highlight=False,
    )
    return api


def _store(home: Path, db: str | None) -> Any:
    """The store of an existing coordinator home; refused (never created) if HOME is not one."""
    from fedcare.coordinator.home import open_home

    return open_home(home, db)


HOME = typer.Option(Path("coordinator-home"), help="The coordinator's home folder.")
DB = typer.Option(None, help="Database URL (default: SQLite in HOME).")
QUEUE = typer.Option(
    False,
    "--queue",
    help="Queue the study even if the coordinator is not running or fewer than min_sites "
    "sites offer its dataset (it starts once they are there); say so as a warning.",
)


@study_app.command("submit")
def study_submit(study: Path, home: Path = HOME, db: str | None = DB, queue: bool = QUEUE) -> None:
    """Queue a study; the coordinator starts it when enough sites are connected.

    Refused at once (exit 2, one-line reason) when it could not run, in this order: HOME is not
    a coordinator home (nothing is created); the study file is invalid; a package folder, or an
    archive failing the federation CA (one passing is stored by hash); an unavailable privacy
    mode, an unknown strategy or model kind, a bad option, a first round past ``privacy.epsilon``,
    or an ``init_model`` that is not a registered model fitting the study's; fewer than
    ``min_sites`` active sites offer its dataset; the coordinator is not running
    (:mod:`fedcare.coordinator.submission`). With ``--queue`` the last two only warn.
    """
    from fedcare.coordinator.submission import submit_study
    from fedcare.records.study import StudyConfig

    start = f"fedcare coordinator start --kit KIT --home {home}" + (f" --db {db}" if db else "")
    try:
        with _store(home, db) as store:
            study_id, warnings = submit_study(
                store, StudyConfig.from_yaml(study), study, home, start=start, queue=queue
            )
    except FedcareError as err:
        raise fail(err) from None
    for warning in warnings:
        console.print("[yellow]warning:[/yellow] queued anyway (--queue): ", end="")
        console.print(warning, markup=False, highlight=False, soft_wrap=True)
    typer.echo(study_id)


@study_app.command("status")
def study_status(
    study_id: str | None = typer.Argument(None), home: Path = HOME, db: str | None = DB
) -> None:
    """Studies with their status and progress (with one study: why sites refused or failed).

    ``STUDY_ID`` may be a unique prefix of an id. Ids are printed whole at any terminal width.
    """
    from fedcare.cli.display import readable_reason, resolve_study_id
    from fedcare.cli.governance import schema_refusals, site_refusals

    try:
        with _store(home, db) as store:
            if study_id:
                study_id = resolve_study_id(store, study_id)
            studies = [store.get_study(study_id)] if study_id else store.list_studies()
            refusals = (
                schema_refusals(store, study_id) + site_refusals(store, study_id)
                if study_id
                else []
            )
            epsilon = store.site_epsilon(study_id) if study_id else {}
            presence = store.coordinator_presence()
    except FedcareError as err:
        raise fail(err) from None
    _warn_if_stopped(presence, studies)
    out = Console(soft_wrap=True, highlight=False)
    if study_id:
        _print_study(out, studies[0])
    else:
        for s in studies:
            out.print(f"{s.id}  {s.name}  {s.status}  {_done(s)}", markup=False)
            _print_reason(out, s)
    for line in refusals:
        out.print(readable_reason(line), markup=False)
    for site, eps in epsilon.items():  # the privacy ledger (fedcare.coordinator.store_ledger)
        out.print(f"site {site}: epsilon spent on this dataset {eps:.3g}")


def _warn_if_stopped(presence: Any, studies: list[Any]) -> None:
    """On stderr: a running or pending study makes no progress while the coordinator is down."""
    from fedcare.cli.display import coordinator_line

    line = coordinator_line(presence, datetime.now(timezone.utc))
    if "NOT running" in line and any(s.status in ("running", "pending") for s in studies):
        console.print(
            f"note: {line.split('; ')[0]}; running and pending studies make no progress "
            "until it starts",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _done(study: Any) -> str:
    total = study.config.get("rounds", "?")
    done = study.last_completed_round if study.last_completed_round is not None else "-"
    return f"{done}/{total}"


def _print_study(out: Console, study: Any) -> None:
    """One study as ``field: value`` lines (no table: nothing is cut at 80 columns)."""
    out.print(f"study {study.id}", markup=False)
    out.print(f"  name: {study.name}\n  status: {study.status}\n  rounds done: {_done(study)}",
              markup=False)  # fmt: skip
    _print_reason(out, study)


def _print_reason(out: Console, study: Any) -> None:
    """Why a study ended, or (while it runs) what it waits for: one line each, e.g.
    ``waiting: awaiting approval at hungary, va (...)`` (:mod:`fedcare.coordinator.waiting`)."""
    from fedcare.cli.display import readable_reason

    if not study.reason:
        return
    if study.status != "running":
        out.print(f"  reason: {readable_reason(study.reason, '    ')}", markup=False)
        return
    for line in study.reason.splitlines():
        out.print(f"  {readable_reason(line, '    ')}", markup=False)


@study_app.command("report")
def study_report(
    study_id: str,
    out: Path = typer.Option(Path("runs/report")),
    home: Path = HOME,
    db: str | None = DB,
) -> None:
    """Write results.json and report.html for a study (or an analytics job).

    ``STUDY_ID`` may be a unique prefix of an id. A failed study's report is still written
    (its rounds help find the cause), but the command says it failed and why and exits 1, so a
    script never mistakes it for a result.
    """
    from fedcare.cli.analytics import write_analytics_outputs
    from fedcare.cli.display import readable_reason, resolve_study_id
    from fedcare.cli.output import write_outputs
    from fedcare.coordinator.analytics_jobs import analytics_job_result
    from fedcare.coordinator.results import study_results

    try:
        with _store(home, db) as store:
            study_id = resolve_study_id(store, study_id)
            analytics = analytics_job_result(store, study_id)
            results = study_results(store, study_id) if analytics is None else {}
        if analytics is None:
            paths = write_outputs(results, out)
        else:
            paths = write_analytics_outputs(analytics, out)
    except FedcareError as err:
        raise fail(err) from None
    console.print(f"results: {paths[0]}\nreport:  {paths[1]}", highlight=False, soft_wrap=True)
    study = results.get("study", {})
    if study.get("status") == "failed":
        reason = readable_reason(study.get("reason") or "no reason recorded")
        console.print(f"[red]study {study_id} FAILED:[/red] ", end="", soft_wrap=True)
        console.print(reason, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)


@study_app.command("cancel")
def study_cancel(study_id: str, home: Path = HOME, db: str | None = DB) -> None:
    """Stop a study after its current round; sites are told to drop its tasks.

    ``STUDY_ID`` may be a unique prefix of an id."""
    from fedcare.cli.display import resolve_study_id

    try:
        with _store(home, db) as store:
            study_id = resolve_study_id(store, study_id)
            store.set_study_status(study_id, "cancelled", "cancelled by the operator")
    except FedcareError as err:
        raise fail(err) from None
    console.print(f"cancelled {study_id}", highlight=False, soft_wrap=True)


def _register_governance() -> None:
    from fedcare.cli.doctor import site_doctor
    from fedcare.cli.governance import register
    from fedcare.cli.review import site_plan

    site_app.command("plan")(site_plan)
    register(site_app)
    site_app.command("doctor")(site_doctor)


_register_governance()
