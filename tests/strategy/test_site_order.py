"""Replies are aggregated in site order, whatever order they arrive in."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcare.records import ArrayRecord, Reply
from fedcare.strategy import FedAvg
from fedcare.strategy.loop import in_site_order

SITES = [f"s{i}" for i in range(6)]


def reply(site: str, value: float = 1.0) -> Reply:
    return Reply("st", 1, site, "fit", arrays=ArrayRecord({"w": np.array([value])}), num_samples=3)


@given(order=st.permutations(SITES), failed=st.sets(st.sampled_from(SITES)))
@settings(max_examples=100, deadline=None)
def test_any_arrival_order_comes_out_sorted(order: list[str], failed: set[str]) -> None:
    failures: dict[str, str] = {}

    def arrive():
        for site in order:
            if site in failed:
                failures[site] = "refused"  # the screening notes a failure instead of yielding
                continue
            yield reply(site)

    out = [r.site_id for r in in_site_order(arrive(), SITES, failures)]
    assert out == sorted(set(SITES) - failed)


def test_in_order_arrival_streams_without_holding_replies() -> None:
    held: list[int] = []
    failures: dict[str, str] = {}
    pending = 0

    def arrive():
        nonlocal pending
        for site in SITES:
            pending += 1
            yield reply(site)

    for _ in in_site_order(arrive(), SITES, failures):
        held.append(pending)
        pending -= 1
    assert held == [1] * len(SITES)


def test_fedavg_result_is_bitwise_independent_of_arrival_order() -> None:
    rng = np.random.default_rng(0)
    values = {s: rng.normal(size=1000) * 10.0 ** rng.integers(-8, 8) for s in SITES}
    strategy = FedAvg()
    state = strategy.init_state(ArrayRecord({"w": np.zeros(1000)}))
    results = []
    for seed in range(3):
        order = list(np.random.default_rng(seed).permutation(SITES))
        replies = [
            Reply(
                "st",
                1,
                s,
                "fit",
                arrays=ArrayRecord({"w": values[s]}),
                num_samples=3 + SITES.index(s),
            )
            for s in order
        ]
        sorted_replies = in_site_order(iter(replies), SITES, {})
        new_state, _ = strategy.aggregate_fit(1, state, sorted_replies, num_available=6)
        results.append(new_state.params["w"].tobytes())
    assert results[0] == results[1] == results[2]
