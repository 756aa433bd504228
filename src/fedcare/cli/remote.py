"""The study commands and ``fedcare sites`` from a desk: over the coordinator's HTTP API
(``fedcare models`` and ``fedcare analytics`` use :func:`remote_client` and :func:`api_fail`
too: cli/models.py, cli/analytics.py).

A command runs remotely when ``--coordinator URL`` is given, or ``FEDCARE_COORDINATOR`` is set
and ``--home``/``--db`` are not given on the command line (both ``--coordinator`` and ``--home``
on the command line: refused). The token is never an option (it would land in the shell's
history): ``FEDCARE_TOKEN``, else ``token:`` in the client config file
(:mod:`fedcare.dashboard.client_config`); the CA: ``--ca``, ``FEDCARE_CA`` or the config file.
Remote commands print the same lines as on the coordinator's host; ``--json`` prints the API's
JSON shapes instead (also on the host). ``fedcare study wait`` follows a study to its end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fedcare.cli.common import echo_json
from fedcare.cli.options import CA, COORDINATOR, DB, HOME, JSON

if TYPE_CHECKING:
    from fedcare.dashboard.client import Client


def remote_client(ctx: typer.Context, coordinator: str | None, ca: Path | None) -> Client | None:
    """The API client when the command runs remotely, None when it reads the home."""
    if not coordinator:
        return None
    given = [f"--{name}" for name in ("home", "db") if _on_command_line(ctx, name)]
    if given:
        if not _on_command_line(ctx, "coordinator"):
            return None  # --home on the command line beats FEDCARE_COORDINATOR
        raise _fail(
            f"give either --coordinator (ask the HTTP API) or {' and '.join(given)} (read the "
            "coordinator's home on its host), not both"
        )
    from fedcare.dashboard.client import Client
    from fedcare.errors import FedcareError

    try:
        return Client(coordinator, ca=ca)
    except FedcareError as err:
        raise _fail(str(err)) from None


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was typed (not a default, not from the environment); by the
    source's name: typer may bring its own copy of click, with its own enum."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _fail(message: str) -> typer.Exit:
    from fedcare.cli.common import fail

    return fail(Exception(message))


def api_fail(err: Exception, client: Client) -> typer.Exit:
    """``error: DETAIL (HTTP 404)``, exit 2; a 401 without a token says where one goes."""
    from fedcare.errors import ApiError

    text = str(err)
    if isinstance(err, ApiError) and err.status is not None:
        text += f" (HTTP {err.status})"
        if err.status == 401 and not client.settings.token:
            text += "; no token was given: set FEDCARE_TOKEN or 'token:' in the client config"
    return _fail(text)


def ask_api(client: Client, call: Any) -> Any:
    """``call(client)`` in the client's session; an API error exits as ``error: … (HTTP N)``."""
    from fedcare.errors import FedcareError

    try:
        with client:
            return call(client)
    except FedcareError as err:
        raise api_fail(err, client) from None


def remote_submit(client: Client, study: Path, queue: bool, as_json: bool) -> None:
    """``fedcare study submit`` over the API: the study id (or the JSON), warnings first."""
    from fedcare.cli.common import print_warnings
    from fedcare.errors import FedcareError

    try:
        with client:
            result = client.submit(study, queue=queue)
    except FedcareError as err:
        raise api_fail(err, client) from None
    if as_json:
        echo_json(result)
        return
    print_warnings(result.get("warnings") or [])
    typer.echo(result["id"])


def remote_status(client: Client, study_id: str | None, as_json: bool) -> None:
    """``fedcare study status [ID]`` over the API."""
    from fedcare.cli.display import print_status
    from fedcare.errors import FedcareError

    try:
        with client:
            data: Any = client.study(study_id) if study_id else client.studies()
    except FedcareError as err:
        raise api_fail(err, client) from None
    if as_json:
        echo_json(data)
    elif study_id:
        print_status([data], data.get("refusals", []), data.get("epsilon_spent"), one=True)
    else:
        print_status(data)


def remote_report(client: Client, study_id: str, out: Path, as_json: bool) -> None:
    """``fedcare study report ID`` over the API (exit 1 for a failed study, as on the host)."""
    from fedcare.cli.common import report_written
    from fedcare.errors import FedcareError

    try:
        with client:
            paths = client.report(study_id, out)
        results = json.loads(paths[0].read_text())
    except (FedcareError, ValueError) as err:
        raise api_fail(err, client) from None
    report_written(results, paths, study_id, as_json)


def remote_cancel(client: Client, study_id: str, as_json: bool) -> None:
    """``fedcare study cancel ID`` over the API."""
    from fedcare.cli.common import console
    from fedcare.errors import FedcareError

    try:
        with client:
            brief = client.cancel(study_id)
    except FedcareError as err:
        raise api_fail(err, client) from None
    if as_json:
        echo_json(brief)
    else:
        console.print(f"cancelled {brief['id']}", highlight=False, soft_wrap=True)


def remote_sites(client: Client, as_json: bool) -> None:
    """``fedcare sites`` over the API (states as the coordinator works them out)."""
    from fedcare.cli.display import print_sites
    from fedcare.errors import FedcareError

    try:
        with client:
            sites = client.sites()
    except FedcareError as err:
        raise api_fail(err, client) from None
    if as_json:
        echo_json(sites)
    else:
        print_sites(list(sites))  # type: ignore[arg-type]


#: The order in which ``fedcare study wait`` counts the sites of a round, by their part in it.
_SITE_ORDER = ("aggregated", "not used", "replied", "refused", "failed", "timed out", "sent")


def round_line(entry: Any, total: Any = None) -> str:
    """A round event (RoundEntry) in one line: ``round 2/20 completed: auroc 0.81, accuracy
    0.74 (sites: 2 aggregated, 1 refused)``; the metrics are the evaluation's weighted means
    (those the sites reported, without their sample count ``n``), none for a round without
    an evaluation. Round 0 is the study's start (the sites' schemas checked, statistics)."""
    from collections import Counter

    sites = entry.get("sites") or {}
    evaluated = {name for part in sites.values() for name in part.get("metrics") or {}}
    metrics = ", ".join(
        f"{name} {value:.4g}"
        for name, value in (entry.get("metrics") or {}).items()
        if name in evaluated and name != "n"
    )
    counts = Counter(str(part.get("status")) for part in sites.values())
    order = sorted(counts, key=lambda s: _SITE_ORDER.index(s) if s in _SITE_ORDER else 99)
    parts = ", ".join(f"{counts[status]} {status}" for status in order)
    total_text = "" if total is None else f"/{total}"
    name = "start (round 0)" if entry["round"] == 0 else f"round {entry['round']}{total_text}"
    line = f"{name} {entry.get('status') or 'done'}"
    return line + (f": {metrics}" if metrics else "") + (f" (sites: {parts})" if parts else "")


class WaitPrinter:
    """Prints a study's events as ``fedcare study wait`` does: a line per completed round
    (:func:`round_line`) and the final status (``--json``: every event as a JSON line
    ``{"event", "data"}``)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.total: Any = None

    def __call__(self, event: str, data: Any) -> None:
        from fedcare.cli.display import readable_reason

        if self.as_json:
            echo_json({"event": event, "data": data}, lines=True)
            return
        if event == "status":
            self.total = data.get("rounds_total")
        elif event == "round":
            typer.echo(round_line(data, self.total))
        elif event == "end":
            reason = data.get("reason")
            line = f"study {data['id']} {data['status']}"
            typer.echo(line + (f": {readable_reason(reason)}" if reason else ""))


def end_code(brief: Any) -> None:
    """Exit 0 for a completed study, 1 for a failed or cancelled one."""
    if brief.get("status") != "completed":
        raise typer.Exit(code=1)


def remote_wait(client: Client, study_id: str, timeout: float | None, as_json: bool) -> None:
    """``fedcare study wait ID`` over the API's event stream (reconnecting if it drops)."""
    from fedcare.errors import FedcareError

    try:
        with client:
            brief = client.wait(study_id, progress=WaitPrinter(as_json), timeout_s=timeout)
    except FedcareError as err:
        raise api_fail(err, client) from None
    end_code(brief)


def local_events(store: Any, study_id: str, poll_s: float, timeout: float | None) -> Any:
    """The events of the API's event stream (what :meth:`fedcare.dashboard.client.Client.wait`
    follows), from looking at the store every ``poll_s`` seconds: ``status`` first and on each
    change, ``round`` per completed round, ``end``
    (:func:`fedcare.dashboard.rounds_view.progress_events`).

    Raises
    ------
    FedcareError
        If the study had not ended after ``timeout`` seconds.
    """
    import time

    from fedcare.dashboard.rounds_view import FINAL_STATUSES, progress_events, progress_key
    from fedcare.errors import FedcareError

    deadline = None if timeout is None else time.monotonic() + timeout
    sent, last = -1, None
    while True:
        study = store.get_study(study_id)
        if progress_key(study) != last:
            last = progress_key(study)
            events, sent = progress_events(store, study, sent)
            yield from events
            if study.status in FINAL_STATUSES:
                return
        if deadline is not None and time.monotonic() >= deadline:
            raise FedcareError(f"study {study_id} had not ended after {timeout:g} s")
        time.sleep(poll_s)


def study_wait(
    ctx: typer.Context,
    study_id: str,
    home: Path = HOME,
    db: str | None = DB,
    coordinator: str | None = COORDINATOR,
    ca: Path | None = CA,
    as_json: bool = JSON,
    timeout: float | None = typer.Option(None, help="Give up (exit 2) after this many seconds."),
    poll: float = typer.Option(2.0, help="Seconds between looks at the home (local only)."),
) -> None:
    """Follow a study until it ends: a line per completed round, then its final status.

    Exit 0 when it completed, 1 when it failed or was cancelled, 2 on an error or --timeout.
    Remotely it follows the API's event stream (reopened where it left off if it drops); on
    the coordinator's host it looks at the home every --poll seconds. ``--json``: each event
    as a JSON line ``{"event": "status"|"round"|"end", "data": ...}``.
    """
    from fedcare.cli.common import _store, fail
    from fedcare.cli.display import resolve_study_id
    from fedcare.errors import FedcareError

    client = remote_client(ctx, coordinator, ca)
    if client is not None:
        return remote_wait(client, study_id, timeout, as_json)
    printer, brief = WaitPrinter(as_json), None
    try:
        with _store(home, db) as store:
            study_id = resolve_study_id(store, study_id)
            for event, data in local_events(store, study_id, poll, timeout):
                printer(event, data)
                brief = data
    except FedcareError as err:
        raise fail(err) from None
    end_code(brief)
