"""What the grids whose sites live in workers share: their sites, the rows each declared, and
views over some of them (:class:`~fedcare.simulation.parallel.ParallelGrid`,
:class:`~fedcare.simulation.ray_grid.RayGrid`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from fedcare.data.base import SiteData
from fedcare.errors import TransportError
from fedcare.grid import Split

__all__ = ["OwnedSites"]

G = TypeVar("G", bound="OwnedSites")


class OwnedSites:
    """The sites a worker-owned grid serves and the rows each declared (as at Hello)."""

    _sites: list[str]
    _rows: dict[Split, dict[str, int]]

    def _own(self, sites: Sequence[SiteData]) -> None:
        self._sites = sorted(s.site_id for s in sites)
        self._rows = {
            "train": {s.site_id: len(s.train) for s in sites},
            "test": {s.site_id: len(s.test) for s in sites},
        }

    def site_ids(self) -> list[str]:
        return list(self._sites)

    def declared_rows(self, split: Split = "train") -> dict[str, int]:
        return dict(self._rows.get(split, {}))

    def _view(self: G, site_ids: Sequence[str]) -> G:
        """A new, uninitialized grid of this class over ``site_ids`` (the caller shares its
        workers with it).

        Raises
        ------
        TransportError
            If a site is not on this grid.
        """
        missing = [s for s in site_ids if s not in self._sites]
        if missing:
            raise TransportError(f"unknown sites {missing}; known: {self.site_ids()}")
        view = object.__new__(type(self))
        view._sites = sorted(site_ids)
        view._rows = {
            split: {s: n for s, n in r.items() if s in site_ids} for split, r in self._rows.items()
        }
        return view
