"""Rounds recorded in a coordinator store as the coordinator's runner records them: tasks
created and delivered, replies (an update, an error, none before the deadline), then the
round's record (``RoundRecord.to_dict()``) with its evaluation per site."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.store_ledger import PrivacySpend
from fedcare.records.messages import ReplyError

from .helpers import example_config

SITES = ("hungary", "swiss", "va")
UPDATE = b"u" * 1234  # a site's update: 1234 bytes


def register_sites(store: CoordinatorStore, sites: tuple[str, ...] = SITES) -> None:
    """Register ``sites`` (those not registered yet)."""
    known = {s.id for s in store.list_sites()}
    for site in sites:
        if site not in known:
            store.register_site(site, f"serial-{site}")


def running_study(
    store: CoordinatorStore, name: str = "heart", *, owner: str | None = None, **changes: Any
) -> str:
    """A running study of the example's config (named ``name``, with ``changes``: e.g.
    ``rounds``) over :data:`SITES`, registered first."""
    register_sites(store)
    config = example_config(**{"name": name, "rounds": 3, **changes})
    study_id = store.create_study(name, config, 7, owner=owner)
    store.set_study_status(study_id, "running")
    return study_id


def play_round(
    store: CoordinatorStore,
    study_id: str,
    round: int,
    *,
    refused: str | None = "swiss",
    silent: str | None = "va",
    auroc: float | None = None,
    privacy: Sequence[PrivacySpend] = (),
) -> dict[str, Any]:
    """One round: every site gets a fit task; ``refused`` answers with a policy refusal,
    ``silent`` never answers (its task expires when the round is recorded), the others
    reply with :data:`UPDATE`; then the round is recorded (with the ``privacy`` spent).
    Returns its record."""
    sites = list(SITES)
    ids = store.create_tasks(study_id, round, 0, [(s, "fit", None, None) for s in sites])
    for site in sites:
        store.next_task_for(site)
    digest = store.artifacts.put(UPDATE + bytes([round % 256]))
    ok = []
    for task_id, site in zip(ids, sites, strict=True):
        if site == refused:
            error = ReplyError("policy-denied", "the plan's dataset is not allowed")
            store.store_reply(task_id, site, error=error)
        elif site != silent:
            store.store_reply(task_id, site, payload_digest=digest, num_samples=100)
            ok.append(site)
    failed = {}
    if refused:
        failed[refused] = "policy-denied: the plan's dataset is not allowed"
    if silent:
        failed[silent] = "no reply before the deadline"
    value = auroc if auroc is not None else 0.5 + round / 100
    record = {
        "round": round,
        "duration_s": 1.0,
        "fit": {
            "num_contributions": len(ok),
            "train_loss": 1.0 / round,
            "sampled_sites": sites,
            "failed_sites": failed,
            "site_info": {s: {} for s in ok},
        },
        "evaluate": {
            "per_site": {s: {"auroc": value, "accuracy": value - 0.1, "n": 50} for s in ok},
            "weighted": {"auroc": value, "accuracy": value - 0.1, "n": 50 * len(ok)},
            "failed_sites": {},
        },
    }
    store.record_round(
        study_id, round, params=b"p", state=b"s", record=record, duration_s=1.0, privacy=privacy
    )
    return record
