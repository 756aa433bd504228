"""What the site console shows, read from the site home with the site's own modules.

Plans and decisions come from the approvals store (:mod:`fedcare.site.approvals`), a plan's
package review from :mod:`fedcare.site.package_review`, the policy from the file the agent
runs with, the privacy ledger from :mod:`fedcare.site.ledger`, and what each study did here
from the site's audit log: every task received, the site's decision on it, and every reply
sent (its kind and size in bytes, as :func:`fedcare.site.mods.audit_mod` records them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcare.audit.check import read_entries
from fedcare.errors import FedcareError
from fedcare.site.approvals import Approval
from fedcare.site.policy import SitePolicy
from fedcare.site.stewardship import AUDIT_FILE

__all__ = [
    "PolicyView",
    "StudyActivity",
    "package_review",
    "plan_rows",
    "policy_in_force",
    "policy_rows",
    "read_audit",
    "size_text",
    "status_words",
    "studies_from_audit",
]

#: What a reply of each task kind carries away from the site, in plain words.
REPLY_WORDS = {
    "fit": "model update",
    "secagg": "secure-aggregation message",
    "evaluate": "test metrics",
    "stats": "summary statistics",
    "analytics": "aggregate statistics",
}


def size_text(size: int | None) -> str:
    """``1.2 kB`` style (powers of 1000), or an empty string."""
    if size is None:
        return ""
    value, unit = float(size), "bytes"
    for name in ("kB", "MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, name
    return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def status_words(row: Approval, now: Any) -> str:
    """A decision's status for people: awaiting a decision, approved until, expired..."""
    if row.status == "pending":
        return "awaiting your decision"
    if row.expired(now):
        return f"approval expired on {row.until:%Y-%m-%d %H:%M} UTC"
    if row.status == "approved":
        until = f" until {row.until:%Y-%m-%d %H:%M} UTC" if row.until else ""
        return f"approved{until}"
    return {"refused": "refused", "revoked": "approval withdrawn (revoked)"}.get(
        row.status, row.status
    )


def plan_rows(summary: str) -> list[tuple[str, str]]:
    """The lines of a plan summary (``label: value``) as rows; a summary that is not in that
    form (an analytics spec) is one row."""
    rows: list[tuple[str, str]] = []
    for line in summary.splitlines():
        label, sep, value = line.partition(":")
        if not sep or not label.strip() or " " * 3 in label:
            return [("content", summary)]
        rows.append((label.strip(), value.strip()))
    return rows


def package_review(home: Path, kit: Path, plan_hash: str, policy: SitePolicy | None) -> list[str]:
    """The steward's review of the package plan ``plan_hash`` runs (empty when none is
    noted), as ``fedcare site plan`` prints it; FedcareError when it cannot be read."""
    from fedcare.site.approvals import ApprovalStore
    from fedcare.site.package_review import review_lines
    from fedcare.site.packages import SitePackages, package_of_plan

    ref = package_of_plan(home, plan_hash)
    if ref is None:
        return []
    packages = SitePackages.for_kit(home, kit)
    return review_lines(packages, ApprovalStore.in_state_dir(home), ref, policy)


def read_audit(home: Path) -> list[dict[str, Any]]:
    """The entries of the site's audit log, oldest first (unparsable lines are skipped here:
    the verification names them)."""
    entries = read_entries(Path(home) / AUDIT_FILE)
    return [e for e in entries if isinstance(e.get("data"), dict)]


@dataclass(frozen=True)
class PolicyView:
    """The policy in force: the file (None: the default policy), the policy or its problem."""

    path: Path | None
    policy: SitePolicy | None
    problem: str = ""


def policy_in_force(entries: Sequence[Mapping[str, Any]], given: Path | None) -> PolicyView:
    """The policy ``given``, else the file the agent last started with (its newest
    ``agent-started`` audit entry names it; none: the default policy)."""
    path = given
    if path is None:
        started = [e for e in entries if e.get("event") == "agent-started"]
        named = started[-1]["data"].get("policy_file") if started else None
        path = Path(named) if named else None
    if path is None:
        return PolicyView(None, SitePolicy())
    try:
        return PolicyView(path, SitePolicy.from_yaml(path))
    except FedcareError as err:
        return PolicyView(path, None, str(err))


@dataclass
class StudyActivity:
    """What one study (by coordinator study id) did at this site."""

    study_id: str
    name: str = ""
    datasets: set[str] = field(default_factory=set)
    plans: set[str] = field(default_factory=set)
    rounds: set[int] = field(default_factory=set)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    last_time: str = ""

    @property
    def sent_bytes(self) -> int:
        """The size of every reply sent (results and refusal notices)."""
        return sum(t.get("size") or 0 for t in self.tasks if t.get("sent"))

    @property
    def refusals(self) -> int:
        return sum(1 for t in self.tasks if t.get("outcome") == "refused")

    @property
    def updates(self) -> int:
        return sum(1 for t in self.tasks if t.get("ok"))


def studies_from_audit(entries: Sequence[Mapping[str, Any]]) -> list[StudyActivity]:
    """Each study's tasks at this site, newest activity first (see the module docstring)."""
    studies: dict[str, StudyActivity] = {}
    tasks: dict[str, dict[str, Any]] = {}
    for entry in entries:
        event, data, when = entry.get("event"), entry["data"], str(entry.get("time", ""))
        task_id = str(data.get("task_id", ""))
        if event == "task-received":
            study = studies.setdefault(
                str(data.get("study_id")), StudyActivity(str(data.get("study_id")))
            )
            study.name = study.name or str(data.get("study") or "")
            study.datasets.add(str(data.get("dataset") or ""))
            study.plans.add(str(data.get("plan_hash") or ""))
            if isinstance(data.get("round"), int):
                study.rounds.add(int(data["round"]))
            task = {"task_id": task_id, "round": data.get("round"), "kind": data.get("kind"),
                    "received": when, "outcome": "", "reason": "", "sent": ""}  # fmt: skip
            tasks[task_id] = task
            study.tasks.append(task)
            study.last_time = when
        elif task_id in tasks and event == "decision":
            tasks[task_id]["outcome"] = str(data.get("outcome", ""))
            tasks[task_id]["reason"] = str(data.get("reason") or "")
            tasks[task_id]["reason_kind"] = str(data.get("reason_kind") or "")
        elif task_id in tasks and event == "reply-sent":
            task = tasks[task_id]
            ok = bool(data.get("ok"))
            task.update(sent=when, ok=ok, size=data.get("size_bytes"),
                        error_kind=data.get("error_kind") or "")  # fmt: skip
            kind = str(data.get("kind") or task["kind"])
            task["what"] = (
                REPLY_WORDS.get(kind, kind) if ok else "refusal or failure notice (no data)"
            )
    for study in studies.values():
        study.datasets.discard("")
        study.plans.discard("")
        study.tasks.reverse()
    return sorted(studies.values(), key=lambda s: s.last_time, reverse=True)


def policy_rows(policy: SitePolicy) -> list[tuple[str, str, str]]:
    """The policy as (rule, value, what it means) rows in plain words."""
    p = policy
    studies = ", ".join(p.allowed_studies) if p.allowed_studies is not None else "any"
    caps = ", ".join(f"{d}: {c:g}" for d, c in sorted(p.epsilon_cap.items())) or "none"
    limits = p.resources
    return [
        ("Studies allowed", studies,
         "Only these studies may use this site's data (each plan still needs your approval)."),
        ("Weakest privacy mode accepted", p.min_privacy_mode,
         "open < secure = encrypted < private: a study in a weaker mode is refused."),
        ("Privacy budget cap (epsilon) per dataset", caps,
         "The most privacy loss all studies together may spend on a dataset."),
        ("Smallest cohort", str(p.min_cohort),
         "No task runs on a dataset with fewer patients (rows) than this."),
        ("Smallest count released (analytics)", str(p.min_cell),
         "Counts below this are withheld from analytics results."),
        ("What may leave the site", ", ".join(p.allowed_outputs).replace("_", " ") or "nothing",
         "The kinds of results a task may send back."),
        ("Most rounds per study", "no limit" if p.max_rounds is None else str(p.max_rounds),
         "A study asking for more training rounds is refused."),
        ("Time limit per task",
         "none" if limits.task_time_limit_s is None else f"{limits.task_time_limit_s:g} s",
         "A task running longer is stopped."),
        ("Memory limit per task",
         "none" if limits.memory_limit_mb is None else f"{limits.memory_limit_mb} MB", ""),
        ("Isolation of the code that runs on the data", p.sandbox,
         "off: none; prefer: isolated where the machine allows; require: refuse otherwise."),
        ("Researchers whose study packages may run",
         ", ".join(p.packages.trusted_signers) or "nobody",
         "Code written by a researcher runs only if signed by one of these."),
        ("Devices study code may use", ", ".join(p.devices), ""),
    ]  # fmt: skip
