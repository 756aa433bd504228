"""Epsilon per round, per study and per site, from a study's round history.

The coordinator side of accounting, computed for now from the history the round loop returns
(what ``results.json`` holds): central DP layers report ``dp_events`` in each round's fit
measurements, and sites running DP-SGD report their round's event in the reply ``info``
(``site_info[site]["dp_event"]``, JSON). The study's epsilon composes the central events;
each site's epsilon composes its own DP-SGD events over the rounds it took part in. (The
persisted privacy ledger and the budget guard that refuses a round come next.)

Per-round curves use the RDP accountant, which composes incrementally; the final figures
use the study's accountant (``rdp`` or ``pld``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant as rdp_analysis

from fedcare.privacy.accounting.analysis import DEFAULT_ORDERS, DpEvent, event_from_dict, rdp_curve
from fedcare.privacy.accounting.registry import epsilon_of

__all__ = ["history_events", "privacy_summary"]


def history_events(
    history: Sequence[Mapping[str, Any]],
) -> tuple[list[list[DpEvent]], list[dict[str, DpEvent]]]:
    """``(central events of each round, {site: DP-SGD event} of each round)``."""
    central: list[list[DpEvent]] = []
    local: list[dict[str, DpEvent]] = []
    for rec in history:
        fit = rec.get("fit", {})
        rnd = rec.get("round")
        events = fit.get("dp_events")
        if events is None and "dp_event" in fit:
            events = [fit["dp_event"]]
        central.append(
            [
                event_from_dict(e, what=f"round {rnd} dp_events[{i}]")
                for i, e in enumerate(events or [])
            ]
        )
        sites: dict[str, DpEvent] = {}
        for site, info in sorted(fit.get("site_info", {}).items()):
            if "dp_event" in info:
                data = json.loads(info["dp_event"])
                sites[site] = event_from_dict(data, what=f"round {rnd} site {site!r} dp_event")
        local.append(sites)
    return central, local


class _Curve:
    """RDP composed one round at a time (per-step curves are cached by ``rdp_curve``)."""

    def __init__(self) -> None:
        self._rdp = np.zeros(len(DEFAULT_ORDERS))
        self._infinite = False

    def add(self, events: Sequence[DpEvent]) -> None:
        for e in events:
            if e.noise_multiplier == 0:
                self._infinite = True
            else:
                self._rdp = self._rdp + rdp_curve(e)

    def epsilon(self, delta: float) -> float:
        if self._infinite:
            return math.inf
        if not self._rdp.any():
            return 0.0
        return float(rdp_analysis.compute_epsilon(list(DEFAULT_ORDERS), self._rdp, delta)[0])


def privacy_summary(
    history: Sequence[Mapping[str, Any]], *, delta: float, accountant: str = "rdp"
) -> dict[str, Any]:
    """Epsilon of the study and of each site after every round and at the end.

    Returns
    -------
    dict
        ``{"delta", "accountant", "study_epsilon", "site_epsilon": {site: eps},
        "per_round": [{"round", "study_epsilon", "site_epsilon"}]}``; ``study_epsilon`` is
        None without central DP, ``site_epsilon`` empty without DP-SGD.
    """
    central, local = history_events(history)
    has_central = any(central)
    study_curve, site_curves = _Curve(), dict[str, _Curve]()
    per_round = []
    for rec, events, sites in zip(history, central, local, strict=True):
        study_curve.add(events)
        for site, event in sites.items():
            site_curves.setdefault(site, _Curve()).add([event])
        per_round.append(
            {
                "round": rec.get("round"),
                "study_epsilon": study_curve.epsilon(delta) if has_central else None,
                "site_epsilon": {s: c.epsilon(delta) for s, c in sorted(site_curves.items())},
            }
        )
    all_central = [e for events in central for e in events]
    by_site: dict[str, list[DpEvent]] = {}
    for sites in local:
        for site, event in sites.items():
            by_site.setdefault(site, []).append(event)
    return {
        "delta": delta,
        "accountant": accountant,
        "study_epsilon": epsilon_of(all_central, delta, method=accountant) if has_central else None,
        "site_epsilon": {
            s: epsilon_of(ev, delta, method=accountant) for s, ev in sorted(by_site.items())
        },
        "per_round": per_round,
    }
