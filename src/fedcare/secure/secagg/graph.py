"""The SecAgg+ neighbour graph: each site exchanges keys and shares with ``k`` others only.

Bell et al. (2020) show that a random graph of degree ``k = O(log n)`` keeps the sum private and
correct with high probability; we use a Harary graph (a ring where each site links to ``k/2``
sites on each side) over a random permutation of the sites, seeded by the round, so every degree
is exactly ``k``. With few sites (``k >= n - 1``) the graph is complete and the protocol is the
original SecAgg (Bonawitz et al. 2017). A site's secrets are shared among its ``k`` neighbours
and itself; ``threshold`` of those ``k + 1`` holders are needed to reconstruct one, and a strict
majority is the default, so at most ``k + 1 - t`` of any site's holders may drop out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedcare.errors import ConfigError

__all__ = [
    "check_settings",
    "default_degree",
    "default_threshold",
    "min_degree",
    "neighbour_graph",
]


def default_degree(num_sites: int) -> int:
    """``k``: the even number nearest above ``3 log2 n``, at most ``n - 1`` (complete graph)."""
    if num_sites < 2:
        raise ConfigError(f"secure aggregation needs at least 2 sites, got {num_sites}")
    k = 2 * math.ceil(1.5 * math.log2(num_sites))
    return min(num_sites - 1, max(k, 2))


def default_threshold(degree: int) -> int:
    """``t``: a strict majority of a site's ``degree + 1`` share holders."""
    return (degree + 1) // 2 + 1


def min_degree(num_sites: int) -> int:
    """The fewest neighbours a study may set: ``2 ceil(log2 n)``, at most ``n - 1``.

    Bell et al. (2020) need ``k = O(log n)`` neighbours, with a constant that grows with the
    fractions of dropped and corrupt sites, for the sum to stay private and correct with high
    probability. Two thirds of the default (``2 ceil(1.5 log2 n)``) is the floor we accept.
    """
    if num_sites < 2:
        raise ConfigError(f"secure aggregation needs at least 2 sites, got {num_sites}")
    return min(num_sites - 1, 2 * math.ceil(math.log2(num_sites)))


def check_settings(
    num_sites: int, neighbours: int | None, threshold: int | None
) -> tuple[int, int]:
    """The ``(degree, threshold)`` a round of ``num_sites`` sites uses for a study's settings.

    ``None`` takes the default. More neighbours than ``n - 1`` give the complete graph (the
    original SecAgg, which only strengthens privacy).

    Raises
    ------
    ConfigError
        Naming the setting (``privacy.secagg.neighbours`` or ``.threshold``), its value and why:
        fewer neighbours than :func:`min_degree`, an odd count below ``n - 1`` (the graph is a
        ring of ``k / 2`` sites on each side), or a threshold that is not a strict majority of
        the ``k + 1`` holders of a site's shares (or exceeds them).
    """
    floor = min_degree(num_sites)
    k = default_degree(num_sites) if neighbours is None else min(neighbours, num_sites - 1)
    if neighbours is not None and k < floor:
        raise ConfigError(
            f"privacy.secagg.neighbours={neighbours} is below {floor} = 2 ceil(log2 {num_sites}) "
            f"for {num_sites} sites: with so few neighbours SecAgg+ no longer keeps the sum "
            "private and correct with high probability (Bell et al. 2020)"
        )
    if k < num_sites - 1 and k % 2:
        raise ConfigError(
            f"privacy.secagg.neighbours={neighbours} must be even below n - 1 = {num_sites - 1} "
            f"({num_sites} sites): each site links to k/2 sites on each side of a ring"
        )
    t = default_threshold(k) if threshold is None else threshold
    if not default_threshold(k) <= t <= k + 1:
        raise ConfigError(
            f"privacy.secagg.threshold={threshold} must be in [{default_threshold(k)}, {k + 1}] "
            f"with {k} neighbours ({num_sites} sites): a strict majority of the {k + 1} holders "
            "of a site's shares, so the coordinator can never reconstruct both a site's "
            "self-mask and its mask key, and no more than there are holders"
        )
    return k, t


def neighbour_graph(sites: Sequence[str], degree: int, seed: int) -> dict[str, tuple[str, ...]]:
    """Each site's neighbours (sorted), in a ``degree``-regular graph seeded by ``seed``.

    Raises
    ------
    ConfigError
        If ``degree`` is below 1, above ``n - 1``, or odd for an incomplete graph.
    """
    ordered = sorted(sites)
    n = len(ordered)
    if not 1 <= degree <= n - 1:
        raise ConfigError(f"neighbour degree must be in [1, {n - 1}] for {n} sites, got {degree}")
    if degree == n - 1:
        return {s: tuple(o for o in ordered if o != s) for s in ordered}
    if degree % 2:
        raise ConfigError(f"neighbour degree must be even below n - 1 = {n - 1}, got {degree}")
    perm = np.random.default_rng(seed).permutation(n)
    ring = [ordered[i] for i in perm]
    out: dict[str, tuple[str, ...]] = {}
    for pos, site in enumerate(ring):
        near = {ring[(pos + off) % n] for off in range(-(degree // 2), degree // 2 + 1) if off}
        out[site] = tuple(sorted(near))
    return dict(sorted(out.items()))
