"""A site's check of a round's secure-aggregation setup against what its steward approved.

The coordinator builds each round's neighbour graph and picks the share threshold
(:mod:`fedcare.secure.secagg.graph`); the site's client only checks that the threshold is a
strict majority of its share holders. A coordinator that gave a site fewer neighbours, or a
lower threshold, than the approved plan fixes would weaken the protocol the steward approved
(fewer neighbours: fewer honest masks around the site; a lower threshold: fewer colluders
reconstruct its secrets). So, before a site answers the ``advertise`` stage, it compares the
setup with the plan's ``site_half["secagg"]``:

- the round's site count ``n`` is the header's ``sites`` (a site cannot be told fewer sites
  than the Shamir points it sees: the largest point is a lower bound);
- the site must have at least ``min(k, n - 1)`` neighbours, ``k`` the plan's ``neighbours`` or,
  when the plan leaves it unset, the default for ``n`` (:func:`graph.default_degree`);
- the threshold must be at least the plan's ``threshold`` (capped at the site's holders, as the
  coordinator caps it for a small round), or the default for its neighbours when unset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedcare.secure.secagg.graph import default_degree, default_threshold

__all__ = ["setup_refusal"]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def setup_refusal(header: Mapping[str, Any], planned: Mapping[str, Any]) -> str | None:
    """Why a site refuses the advertised setup ``header`` under the plan's ``planned`` secagg
    entry, or ``None`` when the setup is at least as strong as the plan fixes."""
    neighbours = header.get("neighbours")
    point, threshold = _int(header.get("point")), _int(header.get("threshold"))
    if not isinstance(neighbours, Mapping) or point is None or threshold is None:
        return "the setup lacks its neighbours, point or threshold"
    points = [_int(p) for p in neighbours.values()] + [point]
    if any(p is None or p < 1 for p in points):
        return f"the setup's Shamir points {sorted(map(str, points))} are not positive integers"
    highest = max(p for p in points if p is not None)
    sites = _int(header.get("sites", highest))
    if sites is None or sites < highest:
        return f"the setup says {header.get('sites')!r} sites but gives point {highest}"
    degree = len(neighbours)
    planned_k = _int(planned.get("neighbours")) or default_degree(sites)
    wanted_k = min(planned_k, sites - 1)
    if degree < wanted_k:
        return (
            f"the round gives this site {degree} neighbours; the approved plan needs "
            f"{wanted_k} among {sites} sites (neighbours "
            f"{planned.get('neighbours') or f'default {planned_k}'})"
        )
    planned_t = _int(planned.get("threshold"))
    wanted_t = default_threshold(degree) if planned_t is None else min(planned_t, degree + 1)
    if threshold < wanted_t:
        return (
            f"the round's share threshold is {threshold}; the approved plan needs at least "
            f"{wanted_t} (threshold {planned_t if planned_t is not None else 'default'}, "
            f"{degree + 1} share holders)"
        )
    return None
