"""The coordinator's side of privacy budgets: what each round spent, and the budget guard.

* :func:`round_spends` reads a completed round's record and says what each contributing site
  spent, exactly what the site's own ledger recorded (:func:`fedcare.site.ledger.task_events`):
  the ``private`` mode's round event, and the site's DP-SGD event (reported in the reply's
  info, or, hidden by the secure sum, computed as the site computes it). The
  runner passes them to ``record_round``, which writes them in the round's transaction.
* :func:`ledger_summary` gives epsilon per site (the mirror ledger) and per study.

The budget guard that refuses a round past the study's ``privacy.epsilon`` is core
(:func:`fedcare.privacy.guard.guard_next_round`), shared with ``fedcare simulate``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fedcare.coordinator.store_ledger import PrivacySpend
from fedcare.models.task_config import spec_from_config
from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.privacy.budget import LEDGER_DELTA, LEDGER_METHOD, ledger_epsilon
from fedcare.privacy.study import dp_sgd_train_config
from fedcare.privacy.summary import history_events
from fedcare.records.study import StudyConfig

__all__ = [
    "ledger_summary",
    "round_spends",
    "site_dp_sgd_event",
]


def round_spends(
    study: StudyConfig, record: Mapping[str, Any], rows: Mapping[str, int] | None = None
) -> list[PrivacySpend]:
    """Each contributing site's spend in the round ``record`` describes (none without DP).

    A site's DP-SGD event comes from its reply's info; in mode ``private``, where a site's
    info may be missing, it is computed as the site computes it before training, from the
    study's training settings and the site's registered number of training rows
    ``rows[site]``.
    """
    fit = record.get("fit", {})
    if not isinstance(fit, Mapping):
        return []
    shared: list[dict[str, Any]] = []
    if study.privacy.mode == "private":
        shared = [dict(e) for e in fit.get("dp_events", [])]
    info = fit.get("site_info", {})
    sites = [s for s in fit.get("contributing_sites", []) if isinstance(s, str)]
    out = []
    for site in sorted({*sites, *info}):
        local = info.get(site, {}).get("dp_event") if isinstance(info.get(site), Mapping) else None
        events = [*shared, *([json.loads(local)] if local else [])]
        if local is None and study.privacy.mode == "private" and rows and site in rows:
            hidden = site_dp_sgd_event(study, rows[site])
            events += [] if hidden is None else [hidden.to_dict()]
        if site in sites and events:
            out.append(PrivacySpend(site, study.dataset.name, tuple(events)))
    return out


def site_dp_sgd_event(study: StudyConfig, num_rows: int) -> DpEvent | None:
    """The DP-SGD event of one round at a site with ``num_rows`` training rows (None without
    ``privacy.dp.local_dp_sgd``), as :func:`fedcare.site.ledger.task_events` computes it."""
    dp = study.privacy.dp
    if dp is None or dp.local_dp_sgd is None:
        return None
    spec = spec_from_config({**study.training.as_config(), **dp_sgd_train_config(dp, study.rounds)})
    assert spec.dp is not None
    return spec.dp.event(num_rows, spec)


def ledger_summary(
    site_epsilon: Mapping[str, float], study: StudyConfig, history: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Epsilon per site (the mirror ledger) and per study (its rounds' events at its delta).

    ``site_epsilon`` is :meth:`CoordinatorStore.site_epsilon`; ``history`` the completed
    rounds' records. Returns ``{"study_epsilon", "budget", "delta", "site_epsilon",
    "site_delta"}`` (``study_epsilon`` None without DP events).
    """
    dp = study.privacy.dp
    central, _ = history_events([h for h in history if h.get("round", 0) >= 1])
    events = [e for round_events in central for e in round_events]
    delta = dp.delta if dp is not None else LEDGER_DELTA
    method = dp.accountant if dp is not None else LEDGER_METHOD
    return {
        "study_epsilon": ledger_epsilon(events, delta=delta, method=method) if events else None,
        "budget": study.privacy.epsilon,
        "delta": delta,
        "site_epsilon": dict(site_epsilon),
        "site_delta": LEDGER_DELTA,
    }
