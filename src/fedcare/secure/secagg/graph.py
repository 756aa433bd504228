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

__all__ = ["default_degree", "default_threshold", "neighbour_graph"]


def default_degree(num_sites: int) -> int:
    """``k``: the even number nearest above ``3 log2 n``, at most ``n - 1`` (complete graph)."""
    if num_sites < 2:
        raise ConfigError(f"secure aggregation needs at least 2 sites, got {num_sites}")
    k = 2 * math.ceil(1.5 * math.log2(num_sites))
    return min(num_sites - 1, max(k, 2))


def default_threshold(degree: int) -> int:
    """``t``: a strict majority of a site's ``degree + 1`` share holders."""
    return (degree + 1) // 2 + 1


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
