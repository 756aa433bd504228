"""One authenticated site's bad replies are rejected for that site only; the study completes.

A real coordinator and four real heart-disease agents over mutual TLS; one agent (VA Long
Beach, 85 declared training rows) is a :class:`~.helpers.TamperedAgent`: its honest worker's
replies pass through a mod that the test switches per study, round and task kind. The study
file has no ``aggregation:`` entry, so this also shows validation is on by default. Each
attack must leave the study completing, with VA named and the reason in the round's record:

* round 0: the statistics task refused; in a second study, poisoned but consistent sums;
* round 1: an int64 update (and evaluation metrics without ``n``);
* round 2: ``num_samples`` 2^31 - 1 (and evaluation ``n = -1``);
* round 3: honest again, so VA is rejected per reply, not banned.

A NaN update is refused earlier, by the transport's decoder (tested in test_bad_messages.py);
the layer that rejects it in simulation is tested in tests/strategy/test_screening.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.site.app import Handler

from ..conftest import require_mirror
from .helpers import (
    HOSPITALS,
    Deployment,
    contributors,
    deployment,
    heart_study,
    provision,
    submit,
    wait_for_status,
)

pytestmark = pytest.mark.slow
ATTACKER = "va"
HONEST = sorted(set(HOSPITALS) - {ATTACKER})
#: What the attacker does, by (round, kind); the test sets it before each study.
PLAN: dict[tuple[int, str], str] = {}


def _tampered(reply: Reply, attack: str) -> Reply:
    if attack == "int64":
        return replace(reply, arrays=reply.arrays.map(lambda v: (v * 1000).astype(np.int64)))
    if attack == "huge-weight":
        return replace(reply, num_samples=2**31 - 1)
    if attack == "no-n":
        return replace(reply, metrics={k: v for k, v in reply.metrics.items() if k != "n"})
    if attack == "negative-n":
        return replace(reply, metrics={**reply.metrics, "n": -1.0})
    if attack == "poisoned-stats":
        a = reply.arrays
        return replace(
            reply, arrays=ArrayRecord({**a, "sum": a["sum"] * 1e3, "sumsq": a["sumsq"] * 1e6})
        )
    raise AssertionError(f"unknown attack {attack!r}")


def attacker(task: Task, next_handler: Handler) -> Reply:
    attack = PLAN.get((task.round, task.kind))
    if attack == "refuse":
        return Reply.failure(task, "refused", "this site will not send statistics")
    reply = next_handler(task)
    return reply if attack is None or reply.error is not None else _tampered(reply, attack)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    require_mirror()
    root = tmp_path_factory.mktemp("bad-replies")
    with deployment(provision(root / "federation"), root, mods={ATTACKER: [attacker]}) as running:
        yield running


def _all_connected(federation: Deployment, timeout: float = 60.0) -> None:
    """Wait until every agent said Hello, so round 0 asks the attacker too."""
    end = time.monotonic() + timeout
    while {s.id for s in federation.store.list_sites() if s.last_seen} < set(HOSPITALS):
        assert time.monotonic() < end, f"agents not connected\n{federation.describe()}"
        time.sleep(0.2)


def _run(federation: Deployment, plan: dict[tuple[int, str], str], **study: Any) -> list[Any]:
    PLAN.clear()
    PLAN.update(plan)
    _all_connected(federation)
    store = federation.store
    spec = heart_study(min_sites=3, round_timeout=60.0, **study)
    assert not spec.aggregation  # validation must not depend on the study file
    study_id = submit(store, spec)
    wait_for_status(store, study_id, "completed", describe=federation.describe)
    return store.list_rounds(study_id)


def test_each_attack_is_rejected_naming_the_site_and_the_study_completes(
    federation: Deployment,
) -> None:
    plan = {
        (0, "stats"): "refuse",
        (1, "fit"): "int64",
        (1, "evaluate"): "no-n",
        (2, "fit"): "huge-weight",
        (2, "evaluate"): "negative-n",
    }
    rounds = _run(federation, plan, rounds=3)
    story = "\n".join(repr(r.record) for r in rounds)
    assert [r.round for r in rounds] == [0, 1, 2, 3], story
    zero = rounds[0].record
    assert zero["statistics_sites"] == HONEST, story
    assert "will not send statistics" in zero["statistics_rejected"][ATTACKER], story

    fit1, fit2, fit3 = (rounds[i].record["fit"] for i in (1, 2, 3))
    assert fit1["rejected_sites"] == [ATTACKER], story
    assert "dtypes" in fit1["rejected_reasons"][ATTACKER], story
    assert "int64" in fit1["rejected_reasons"][ATTACKER], story
    assert "more than the 85 training rows" in fit2["failed_sites"][ATTACKER], story
    for fit in (fit1, fit2):
        assert fit["num_contributions"] == 3 and ATTACKER not in fit["contributing_sites"], story
    assert contributors(rounds[3].record) == sorted(HOSPITALS), story  # honest again: counted
    assert fit3["rejected_sites"] == [], story

    ev1, ev2, ev3 = (rounds[i].record["evaluate"] for i in (1, 2, 3))
    assert "without 'n'" in ev1["failed_sites"][ATTACKER], story
    assert "'n' = -1" in ev2["failed_sites"][ATTACKER], story
    for ev in (ev1, ev2):
        assert sorted(ev["per_site"]) == HONEST, story
    assert sorted(ev3["per_site"]) == sorted(HOSPITALS), story
    # the final model's clinical validation came back over the wire from every site
    assert sorted(ev3["validation"]) == sorted(HOSPITALS), story
    assert all(ev3["validation"][s]["n"] == ev3["per_site"][s]["n"] for s in HOSPITALS), story
    assert "validation" not in ev2, story  # only the final model's evaluation carries one


def test_poisoned_statistics_are_left_out_of_the_global_standardization(
    federation: Deployment,
) -> None:
    rounds = _run(federation, {(0, "stats"): "poisoned-stats"}, rounds=1)
    zero = rounds[0].record
    assert zero["statistics_sites"] == HONEST, zero
    assert "pooled SDs from the other sites' median" in zero["statistics_rejected"][ATTACKER]
    assert contributors(rounds[1].record) == sorted(HOSPITALS), rounds[1].record
