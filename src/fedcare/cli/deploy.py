"""``fedcare coordinator|site|study``: run a real federation (``provision``: cli/provision.py)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer

from fedcare.cli.common import (
    _stop_on_signals,
    _store,
    console,
    echo_json,
    fail,
    print_warnings,
    report_written,
)
from fedcare.cli.options import CA, COORDINATOR, DB, HOME, JSON
from fedcare.errors import FedcareError

coordinator_app = typer.Typer(help="Run the coordinator.")
site_app = typer.Typer(help="Run a site agent.")
study_app = typer.Typer(
    help="Submit and follow studies (on the coordinator's host, or remotely with --coordinator)."
)


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
    memory_budget_mb: float | None = typer.Option(
        None,
        help="Memory budget in MB: aggregation sums larger than an eighth of it are kept on "
        "disk, memory-mapped under HOME/spill (for models too large to sum in memory).",
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
            memory_budget_mb=memory_budget_mb,
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


QUEUE = typer.Option(
    False,
    "--queue",
    help="Queue the study even if the coordinator is not running or fewer than min_sites "
    "sites offer its dataset (it starts once they are there); say so as a warning.",
)


@study_app.command("submit")
def study_submit(
    ctx: typer.Context,
    study: Path,
    home: Path = HOME,
    db: str | None = DB,
    queue: bool = QUEUE,
    coordinator: str | None = COORDINATOR,
    ca: Path | None = CA,
    as_json: bool = JSON,
) -> None:
    """Queue a study; the coordinator starts it when enough sites are connected.

    Refused at once (exit 2, one-line reason) when it could not run, in this order: HOME is not
    a coordinator home (nothing is created); the study file is invalid; a package folder, or an
    archive failing the federation CA (one passing is stored by hash); an unavailable privacy
    mode, an unknown strategy or model kind, a bad option, a first round past ``privacy.epsilon``,
    or an ``init_model`` that is not a registered model fitting the study's; fewer than
    ``min_sites`` active sites offer its dataset; the coordinator is not running
    (:mod:`fedcare.coordinator.submission`). With ``--queue`` the last two only warn. With
    ``--coordinator`` the study goes through the HTTP API (a local .fcpkg is uploaded first).
    """
    from fedcare.cli.remote import remote_client, remote_submit

    client = remote_client(ctx, coordinator, ca)
    if client is not None:
        return remote_submit(client, study, queue, as_json)
    from fedcare.coordinator.submission import submit_study
    from fedcare.dashboard.views import study_brief
    from fedcare.records.study import StudyConfig

    start = f"fedcare coordinator start --kit KIT --home {home}" + (f" --db {db}" if db else "")
    try:
        with _store(home, db) as store:
            study_id, warnings = submit_study(
                store, StudyConfig.from_yaml(study), study, home, start=start, queue=queue
            )
            brief = study_brief(store.get_study(study_id))
    except FedcareError as err:
        raise fail(err) from None
    if as_json:
        return echo_json({**brief, "warnings": list(warnings)})
    print_warnings(warnings)
    typer.echo(study_id)


@study_app.command("status")
def study_status(
    ctx: typer.Context,
    study_id: str | None = typer.Argument(None),
    home: Path = HOME,
    db: str | None = DB,
    coordinator: str | None = COORDINATOR,
    ca: Path | None = CA,
    as_json: bool = JSON,
) -> None:
    """Studies with their status and progress (with one study: why sites refused or failed).

    ``STUDY_ID`` may be a unique prefix of an id. Ids are printed whole at any terminal width.
    """
    from fedcare.cli.display import print_status, resolve_study_id
    from fedcare.cli.governance import schema_refusals, site_refusals
    from fedcare.cli.remote import remote_client, remote_status
    from fedcare.dashboard.views import study_brief, study_detail

    client = remote_client(ctx, coordinator, ca)
    if client is not None:
        return remote_status(client, study_id, as_json)
    try:
        with _store(home, db) as store:
            if study_id:
                study_id = resolve_study_id(store, study_id)
            studies = [store.get_study(study_id)] if study_id else store.list_studies()
            if as_json:  # the rounds' summaries too (they load the audit trail's libraries)
                detail = study_detail(store, studies[0]) if study_id else None
                return echo_json(detail or [study_brief(s) for s in studies])
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
    print_status([study_brief(s) for s in studies], refusals, epsilon, one=bool(study_id))


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


@study_app.command("report")
def study_report(
    ctx: typer.Context,
    study_id: str,
    out: Path = typer.Option(Path("runs/report")),
    home: Path = HOME,
    db: str | None = DB,
    coordinator: str | None = COORDINATOR,
    ca: Path | None = CA,
    as_json: bool = JSON,
) -> None:
    """Write results.json and report.html for a study (or an analytics job).

    ``STUDY_ID`` may be a unique prefix of an id. A failed study's report is still written
    (its rounds help find the cause), but the command says it failed and why and exits 1, so a
    script never mistakes it for a result. ``--json`` prints the two paths as JSON.
    """
    from fedcare.cli.analytics import write_analytics_outputs
    from fedcare.cli.display import resolve_study_id
    from fedcare.cli.output import write_outputs
    from fedcare.cli.remote import remote_client, remote_report
    from fedcare.coordinator.analytics_jobs import analytics_job_result
    from fedcare.coordinator.results import study_results

    client = remote_client(ctx, coordinator, ca)
    if client is not None:
        return remote_report(client, study_id, out, as_json)
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
    report_written(results, paths, study_id, as_json)


@study_app.command("cancel")
def study_cancel(
    ctx: typer.Context,
    study_id: str,
    home: Path = HOME,
    db: str | None = DB,
    coordinator: str | None = COORDINATOR,
    ca: Path | None = CA,
    as_json: bool = JSON,
) -> None:
    """Stop a study after its current round; sites are told to drop its tasks.

    ``STUDY_ID`` may be a unique prefix of an id."""
    from fedcare.cli.display import resolve_study_id
    from fedcare.cli.remote import remote_cancel, remote_client
    from fedcare.dashboard.views import study_brief

    client = remote_client(ctx, coordinator, ca)
    if client is not None:
        return remote_cancel(client, study_id, as_json)
    try:
        with _store(home, db) as store:
            study_id = resolve_study_id(store, study_id)
            study = store.set_study_status(study_id, "cancelled", "cancelled by the operator")
    except FedcareError as err:
        raise fail(err) from None
    if as_json:
        return echo_json(study_brief(study))
    console.print(f"cancelled {study_id}", highlight=False, soft_wrap=True)


def _register_governance() -> None:
    from fedcare.cli.doctor import site_doctor
    from fedcare.cli.governance import register
    from fedcare.cli.remote import study_wait
    from fedcare.cli.review import site_plan
    from fedcare.cli.site_reports import register as register_site_reports

    site_app.command("plan")(site_plan)
    register(site_app)
    site_app.command("doctor")(site_doctor)
    register_site_reports(site_app)
    study_app.command("wait")(study_wait)


_register_governance()
