"""Disclosure control at a site: small-cell suppression, then optional DP noise.

Every count a site releases goes through :meth:`Releaser.counts`: a cell with
``0 < count < min_cell`` is withheld (sent as 0 with its ``suppressed`` mask set, never the
value), as DataSHIELD's ``nfilter.tab`` does; zero cells are released unless the policy sets
``suppress_zeros``. Sums derived from a withheld group are withheld with it
(:meth:`Releaser.sums`). Cells that would let a withheld one be derived by subtraction are
withheld too (complementary suppression, :mod:`fedcare.analytics.complementary`: the
``withhold`` masks). Noise (Laplace or Gaussian) is added after suppression to what is
released, from an injected generator, and every noised release spends the spec's epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedcare.analytics.spec import NoiseSpec
from fedcare.errors import ConfigError

__all__ = [
    "DEFAULT_MIN_CELL",
    "SUPPRESSED",
    "AnalyticsPolicy",
    "Parts",
    "Releaser",
    "noise_scale",
    "suppressed_cells",
]

#: What the coordinator got from the sites for one query: site -> array name -> array.
Parts = Mapping[str, Mapping[str, np.ndarray]]
#: Suffix of the mask array that marks withheld cells of a count array.
SUPPRESSED = ":suppressed"
#: A site's default minimum cell size.
DEFAULT_MIN_CELL = 5


@dataclass(frozen=True)
class AnalyticsPolicy:
    """What a site allows analytics queries to release.

    Attributes
    ----------
    min_cell:
        Counts with ``0 < count < min_cell`` are withheld. ``min_cell <= 1`` is the explicit
        opt-in to exact Kaplan-Meier (which releases counts at every distinct time).
    suppress_zeros:
        Withhold zero counts too.
    seeded_noise:
        Draw DP noise from the task's seed (simulation only: reproducible, but the coordinator
        knows the seed). Otherwise each task draws a fresh seed from the OS.
    """

    min_cell: int = DEFAULT_MIN_CELL
    suppress_zeros: bool = False
    seeded_noise: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.min_cell, int) or self.min_cell < 0:
            raise ConfigError(
                f"analytics policy min_cell must be an int >= 0, got {self.min_cell!r}"
            )


def noise_scale(noise: NoiseSpec, sensitivity: float, cells: int = 1) -> float:
    """Per-cell noise scale for a release in which one row changes up to ``cells`` cells by
    at most ``sensitivity`` each.

    Laplace: ``b = L1 / eps`` with ``L1 = cells * s``. Gaussian:
    ``sigma = L2 * sqrt(2 ln(1.25 / delta)) / eps`` with ``L2 = sqrt(cells) * s``.
    """
    if noise.mechanism == "laplace":
        return cells * sensitivity / noise.epsilon
    l2 = math.sqrt(cells) * sensitivity
    return l2 * math.sqrt(2.0 * math.log(1.25 / noise.delta)) / noise.epsilon


class Releaser:
    """Suppresses and noises one task's releases; counts the epsilon spent (per task)."""

    def __init__(
        self,
        min_cell: int,
        *,
        noise: NoiseSpec | None = None,
        rng: np.random.Generator | None = None,
        suppress_zeros: bool = False,
        withhold: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        if noise is not None and rng is None:
            raise ConfigError("DP noise needs a random generator")
        self.min_cell, self.noise, self.rng = min_cell, noise, rng
        self.suppress_zeros = suppress_zeros
        #: Cells withheld beyond small cells (complementary suppression), by
        #: ``"<scope>/<name>"``; ``scope`` is the path of the query being answered.
        self.withhold = dict(withhold or {})
        self.scope = ""
        self.epsilon = 0.0
        self.releases = 0

    def small(self, counts: np.ndarray) -> np.ndarray:
        """Mask of the cells to withhold."""
        counts = np.asarray(counts, dtype=np.float64)
        below = counts < self.min_cell
        return below if self.suppress_zeros else below & (counts > 0)

    def _noised(
        self, values: np.ndarray, keep: np.ndarray, sensitivity: float, cells: int
    ) -> np.ndarray:
        if self.noise is None:
            return values
        assert self.rng is not None
        scale = noise_scale(self.noise, sensitivity, cells)
        draw = (
            self.rng.laplace(0.0, scale, values.shape)
            if self.noise.mechanism == "laplace"
            else self.rng.normal(0.0, scale, values.shape)
        )
        self.epsilon += self.noise.epsilon
        self.releases += 1
        return np.where(keep, values + draw, 0.0)

    def counts(
        self,
        name: str,
        counts: np.ndarray,
        *,
        also: np.ndarray | None = None,
        cells_per_row: int = 1,
    ) -> dict[str, np.ndarray]:
        """``{name: released, name + ":suppressed": mask}``; ``also`` withholds more cells.

        ``name`` must start with ``count``: that is how a reader of the wire finds counts.
        ``cells_per_row``: how many of these cells one row can change (by 1 each), for the
        noise's sensitivity (1 for a partition such as histogram bins).
        """
        if not name.startswith("count"):
            raise ValueError(f"count arrays are named count*, got {name!r}")
        counts = np.asarray(counts, dtype=np.float64)
        hide = self.small(counts)
        if also is not None:
            hide = hide | also
        more = self.withhold.get(f"{self.scope}/{name}")
        if more is not None:
            hide = hide | np.asarray(more, dtype=bool).reshape(counts.shape)
        released = np.where(hide, 0.0, counts)
        return {
            name: self._noised(released, ~hide, 1.0, cells_per_row),
            f"{name}{SUPPRESSED}": hide.astype(np.uint8),
        }

    def sums(
        self,
        sums: np.ndarray,
        hide: np.ndarray,
        *,
        sensitivity: float | None,
        what: str,
        cells_per_row: int = 1,
    ) -> np.ndarray:
        """``sums`` with the cells of withheld groups zeroed, then noised (one row changes up
        to ``cells_per_row`` cells by at most ``sensitivity`` each)."""
        if self.noise is not None and sensitivity is None:
            raise ConfigError(
                f"{what}: DP noise on sums needs 'bounds' for the variable (to clip values and "
                "bound the sensitivity)"
            )
        sums = np.asarray(sums, dtype=np.float64)
        keep = ~np.broadcast_to(hide, sums.shape)
        return self._noised(np.where(keep, sums, 0.0), keep, sensitivity or 0.0, cells_per_row)


def suppressed_cells(parts: Parts, name: str) -> dict[str, list[int]]:
    """Per site, the flat indices of withheld cells of count array ``name`` (sites with none
    are left out)."""
    out: dict[str, list[int]] = {}
    for site, arrays in parts.items():
        mask = arrays.get(f"{name}{SUPPRESSED}")
        if mask is not None and np.any(mask):
            out[site] = [int(i) for i in np.flatnonzero(np.asarray(mask).ravel())]
    return out
