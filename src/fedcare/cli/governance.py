"""``fedcare site plan|approve|refuse|revoke|approvals|budget``: the data steward's commands.

Decisions go to the site's approvals store (``<state>/approvals.sqlite``) and, signed with the
site kit's key, to its audit log (``<state>/audit.jsonl``); a running agent reads both before
each task and while one runs, so a revocation stops the study's work at this site at once.
Also here: building the agent's governance for ``fedcare site start`` and the coordinator-side
summary of site refusals that ``fedcare study status`` prints.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fedcare.errors import FedcareError
from fedcare.site.stewardship import (
    AUDIT_FILE,
    DEFAULT_APPROVAL_DAYS,
    KIT_RECORD,
    default_until,
    kit_public_keys,
    login_name,
    open_site_audit,
    recorded_kit,
    remember_kit,
    site_identity,
    steward_store,
)

__all__ = [
    "AUDIT_FILE",
    "KIT_RECORD",
    "build_governance",
    "default_until",
    "kit_public_keys",
    "open_site_audit",
    "register",
    "remember_kit",
    "schema_refusals",
    "site_refusals",
    "steward_store",
]

console = Console(emoji=False, stderr=True)
STATE = typer.Option(Path("site-state"), help="The site's state folder (as for `site start`).")
KIT = typer.Option(
    None,
    help="This site's startup kit (its key signs the decision); default: the kit the agent "
    "last started with on --state (recorded in STATE/kit-path).",
)
STUDY = typer.Option(..., help="The study's name (as in its study file).")
NOTE = typer.Option("", help="A note kept with the decision.")


def _fail(err: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {err}")
    return typer.Exit(code=2)


def site_kit(state: Path, kit: Path | None) -> Path:
    """``kit``, or the one the agent recorded in ``state``; exit 2 naming both if neither."""
    try:
        return recorded_kit(state, kit)
    except FedcareError as err:
        raise _fail(err) from None


def _steward(state: Path, kit: Path | None) -> Any:
    """The sealed approvals store for a decision made with the CLI (by the login name)."""
    return steward_store(state, site_kit(state, kit), person=login_name(), via="cli")


def build_governance(
    state: Path, kit: Path, policy_file: Path | None, *, approve_all: bool = False
) -> Any:
    """The agent's :class:`~fedcare.site.governance.SiteGovernance`; a bad policy raises here.

    The policy file is re-read when it changes (:mod:`fedcare.site.policy_watch`): a change
    is audited and applies from the next task; an invalid file refuses every task.
    """
    from fedcare.site.governance import SiteGovernance
    from fedcare.site.policy import SitePolicy
    from fedcare.site.policy_watch import PolicyFile

    if policy_file:  # checked before the audit log is touched: a bad file stops here
        SitePolicy.from_yaml(policy_file)
    audit = open_site_audit(state, kit)
    remember_kit(state, kit)
    watched = PolicyFile(policy_file, audit) if policy_file else None
    policy = watched.initial if watched is not None else SitePolicy()
    audit.append(
        "agent-started",
        policy=policy.summary(),
        policy_file=str(policy_file) if policy_file else None,
        policy_sha256=watched.current().sha256 if watched is not None else None,
        approve_all=approve_all,
    )
    if approve_all:
        audit.append("approve-all-enabled", warning="every plan runs without a steward decision")
    from fedcare.site.anchoring import SiteAnchors
    from fedcare.site.ledger import SiteLedger
    from fedcare.site.packages import SitePackages

    return SiteGovernance(
        policy,
        steward_store(state, kit),
        audit,
        approve_all=approve_all,
        ledger=SiteLedger.in_state_dir(state),
        policy_file=watched,
        anchors=SiteAnchors(state, kit, audit, site_identity(kit)),
        packages=SitePackages.for_kit(state, kit),
    )


def site_approve(
    study_file: Path | None = typer.Argument(
        None,
        help="The study file (or analytics spec) to approve: its name and plan hash are "
        "computed as `fedcare site plan` does, and printed with the expiry.",
    ),
    study: str | None = typer.Option(None, help="The study's name (without a study file)."),
    plan: str | None = typer.Option(
        None, help="The plan hash (`fedcare site plan STUDY.yaml`); with a file, checked."
    ),
    dataset: str | None = typer.Option(None, help="Analytics: as for `fedcare site plan`."),
    until: str | None = typer.Option(
        None,
        help="Expiry: ISO date or time (UTC unless a zone is given); "
        f"default: {DEFAULT_APPROVAL_DAYS} days from now.",
    ),
    note: str = NOTE,
    state: Path = STATE,
    kit: Path | None = KIT,
) -> None:
    """Approve a training plan for a study at this site, until a date: give the study file
    (`fedcare site approve STUDY.yaml`), or its name and plan hash (`--study NAME --plan HASH`)."""
    from fedcare.cli.plans import plan_to_approve
    from fedcare.site.approvals import parse_until

    try:
        from fedcare.cli.plans import site_packages

        packages = site_packages(state, lambda: site_kit(state, kit))
        study, plan, summary = plan_to_approve(study_file, study, plan, dataset, packages)
        if summary:
            console.print(summary, highlight=False)
        when = parse_until(until) if until is not None else default_until()
        row = _steward(state, kit).approve(study, plan, when, note)
    except FedcareError as err:
        raise _fail(err) from None
    console.print(f"approved plan {plan} for {study!r} until {when:%Y-%m-%d %H:%M} UTC",
                  highlight=False, soft_wrap=True)  # fmt: skip
    typer.echo(row.approval_id)


def site_refuse(
    study: str = STUDY,
    plan: str = typer.Option(..., help="The plan hash."),
    note: str = NOTE,
    state: Path = STATE,
    kit: Path | None = KIT,
) -> None:
    """Refuse a training plan for a study at this site."""
    try:
        _steward(state, kit).refuse(study, plan, note)
    except FedcareError as err:
        raise _fail(err) from None
    console.print(f"refused plan {plan} for {study!r}", highlight=False, soft_wrap=True)


def site_revoke(
    study: str = STUDY,
    plan: str | None = typer.Option(None, help="One plan hash (default: every approved plan)."),
    note: str = NOTE,
    state: Path = STATE,
    kit: Path | None = KIT,
) -> None:
    """Withdraw from a study: a running task stops, no further task runs."""
    try:
        rows = _steward(state, kit).revoke(study, plan, note)
    except FedcareError as err:
        raise _fail(err) from None
    console.print(f"revoked {len(rows)} approval(s) of {study!r}")


def site_approvals(state: Path = STATE, study: str | None = typer.Option(None)) -> None:
    """The steward's decisions, and plans seen in tasks that await one (pending)."""
    from fedcare.site.approvals import ApprovalStore
    from fedcare.site.packages import describe_plan_package

    try:
        rows = ApprovalStore.in_state_dir(state).list(study)
    except FedcareError as err:
        raise _fail(err) from None
    now = datetime.now(timezone.utc)
    out = Console(emoji=False, soft_wrap=True, highlight=False)
    if not rows:
        out.print("no approvals or pending plans yet")
    for r in rows:  # lines, not a table: ids and 64-hex plan hashes are never cut
        status = "expired" if r.expired(now) else r.status
        until = f" until {r.until:%Y-%m-%d %H:%M} UTC" if r.until else ""
        out.print(f"{r.approval_id}  {r.study}  {status}{until}  "
                  f"(decided {r.decided_at:%Y-%m-%d %H:%M} UTC)", markup=False)  # fmt: skip
        out.print(f"  plan: {r.plan_hash}", markup=False)
        package = describe_plan_package(state, r.plan_hash)
        if package:
            out.print(f"  package: {package}", markup=False)
        if r.note:
            out.print(f"  note: {r.note}", markup=False)


def site_budget(
    state: Path = STATE,
    policy_file: Path | None = typer.Option(None, "--policy", help="Show each dataset's cap."),
    detail: bool = typer.Option(False, "--detail", help="One line per recorded spend."),
) -> None:
    """The site's privacy ledger: epsilon spent per dataset (and its cap and what is left)."""
    from fedcare.site.ledger import SiteLedger
    from fedcare.site.policy import SitePolicy

    try:
        ledger = SiteLedger.in_state_dir(state)
        caps = SitePolicy.from_yaml(policy_file).epsilon_cap if policy_file else {}
        lines, spends = ledger.summary(), ledger.spends() if detail else []
    except FedcareError as err:
        raise _fail(err) from None
    if not lines:
        where = f"the ledger in {state}"
        Console(emoji=False).print(
            f"no privacy budget spent yet ({where} records no spend)", highlight=False
        )
        return
    table = Table("dataset", "epsilon spent", "cap", "remaining", "studies", "rounds")
    _fold(table)
    for b in lines:
        cap = caps.get(b.dataset)
        left = "" if cap is None else f"{max(0.0, cap - b.epsilon):.3g}"
        table.add_row(
            b.dataset, f"{b.epsilon:.3g}", "" if cap is None else f"{cap:g}", left,
            str(b.studies), str(b.rounds),
        )  # fmt: skip
    Console(emoji=False).print(table)
    if detail:
        rows = Table("dataset", "study", "study id", "round", "events", "epsilon after")
        _fold(rows, keep=2)
        for sp in spends:
            events = ", ".join(f"z={e.noise_multiplier:.3g} q={e.sampling_probability:g} "
                               f"x{e.count}" for e in sp.events)  # fmt: skip
            rows.add_row(
                sp.dataset, sp.study, sp.study_id, str(sp.round), events,
                f"{sp.epsilon_after:.3g}",
            )  # fmt: skip
        Console(emoji=False).print(rows)


def _fold(table: Table, keep: int | None = None) -> None:
    """Wrap long cells onto more lines instead of cutting them with ``…``; column ``keep``
    (an id) stays on one line whole."""
    for i, column in enumerate(table.columns):
        column.overflow = "fold"
        column.no_wrap = i == keep


def register(site_app: typer.Typer) -> None:
    """Add the steward's commands to ``fedcare site``."""
    # `site plan` is registered beside these (fedcare.cli.review), before them
    site_app.command("approve")(site_approve)
    site_app.command("refuse")(site_refuse)
    site_app.command("revoke")(site_revoke)
    site_app.command("approvals")(site_approvals)
    site_app.command("budget")(site_budget)


def site_refusals(store: Any, study_id: str, *, limit: int = 20) -> list[str]:
    """:func:`fedcare.coordinator.status_view.site_refusals` (imported lazily)."""
    from fedcare.coordinator.status_view import site_refusals as refusals

    return refusals(store, study_id, limit=limit)


def schema_refusals(store: Any, study_id: str) -> list[str]:
    """:func:`fedcare.coordinator.status_view.schema_refusals` (imported lazily)."""
    from fedcare.coordinator.status_view import schema_refusals as refusals

    return refusals(store, study_id)


def approve_for_sites(
    root: Path, coordinator_kit: Path, sites: list[str], study: Any, note: str
) -> str:
    """The steward action of a throwaway federation: approve ``study``'s plan at each site.

    Site ``s`` keeps its state in ``root/state/s`` and its kit next to the coordinator's
    (``<federation>/sites/s``); each approval is audited there. Returns the plan hash.
    """
    from fedcare.strategy.plan import plan_for_study

    plan = plan_for_study(study)
    until = default_until(1)
    for site in sites:
        state, kit = root / "state" / site, coordinator_kit.parent / "sites" / site
        steward_store(state, kit).approve(study.name, plan.hash, until, note)
    return plan.hash
