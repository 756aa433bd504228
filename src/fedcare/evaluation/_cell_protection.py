"""Small-cell and complementary suppression for the subgroup tables a site releases.

The rule is the one :mod:`fedcare.analytics.disclosure` applies to analytics answers (the
evaluation layer cannot import analytics, so it is restated here): a count with
``0 < count < min_cell`` is withheld, zero counts are released, and ``min_cell <= 1`` withholds
nothing. Small-cell suppression alone is undone by subtraction (a level's ``n`` from the site's
row count minus the other levels; ``fn`` from ``pos - tp``), so, as
:mod:`fedcare.analytics.complementary` does, every count cell is a vector over *atoms* (the
distinct combinations of level, score bin, label and decision that the site's rows fall in; a
cell's vector is 1 on the atoms it counts) and a withheld cell, or a small sum of withheld
cells, must not lie in the span of the released cells and of what the site releases anyway
(``known``: its row count, its overall confusion matrix and score histogram). When one does,
the released cell the derivation cannot do without (same level first, then the smallest
non-zero count) is withheld too, and the check runs again. When no single cell is needed (a
level's ``n`` is also the sum of its bins), the smallest other level that every derivation
needs is withheld whole; failing that, the preferred cell taking part in the least-norm
derivation is withheld and the check runs again. If the known vectors alone give it away,
every cell is withheld.

Sums checked: each withheld cell below ``min_cell``, each pair of withheld cells of one level,
the withheld cells of each family (a partition such as the score bins of one level, or the
levels of a group), and every combination found leaking before.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Cell", "protect"]

#: Relative residual below which a vector counts as in a span.
_TOL = 1e-6
#: Eigenvalues of the Gram matrix below this (relative to the largest) do not add to a span.
_RANK_TOL = 1e-10


@dataclass(frozen=True)
class Cell:
    """One released count: its level (index), family (cells of one partition) and its
    membership vector over the atoms."""

    level: int
    family: str
    member: np.ndarray


def _gram(vectors: Sequence[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, U, lam)``: the vectors as columns of ``A`` and the eigenpairs of ``A A^T`` with
    non-zero eigenvalues (``U`` spans the columns; the atoms are few, the cells many)."""
    if not vectors:
        return np.zeros((size, 0)), np.zeros((size, 0)), np.zeros(0)
    A = np.stack(vectors, axis=1)
    lam, U = np.linalg.eigh(A @ A.T)
    keep = lam > _RANK_TOL * max(1.0, float(lam[-1]))
    return A, U[:, keep], lam[keep]


def _basis(vectors: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Orthonormal columns spanning ``vectors`` (shape ``(size, rank)``)."""
    return _gram(vectors, size)[1]


def _in_span(w: np.ndarray, basis: np.ndarray) -> bool:
    residual = w - basis @ (basis.T @ w)
    return bool(np.linalg.norm(residual) <= _TOL * max(1.0, float(np.linalg.norm(w))))


def _combinations(cells: Sequence[Cell], hidden: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(level, vector)`` of the withheld sums to check (level -1: across levels)."""
    idx = [int(i) for i in np.flatnonzero(hidden)]
    out = [(cells[i].level, cells[i].member) for i in idx]
    by_level: dict[int, list[int]] = {}
    by_family: dict[tuple[int, str], list[int]] = {}
    for i in idx:
        by_level.setdefault(cells[i].level, []).append(int(i))
        by_family.setdefault((cells[i].level, cells[i].family), []).append(int(i))
    for level, members in by_level.items():
        for a, b in itertools.combinations(members, 2):
            out.append((level, cells[a].member + cells[b].member))
    for (level, _), members in by_family.items():
        if len(members) > 1:
            out.append((level, np.sum([cells[i].member for i in members], axis=0)))
    return out


def _leak(
    cells: Sequence[Cell],
    counts: np.ndarray,
    hidden: np.ndarray,
    known: Sequence[np.ndarray],
    min_cell: int,
    found: list[tuple[int, np.ndarray]],
) -> tuple[int, np.ndarray] | None:
    released = [c.member for c, h in zip(cells, hidden, strict=True) if not h]
    basis = _basis([*known, *released], counts.size)
    for level, w in [*found, *_combinations(cells, hidden)]:
        value = float(w @ counts)
        if 0 < value < min_cell and _in_span(w, basis):
            return level, w
    return None


def _solve(w: np.ndarray, columns: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Least-norm coefficients of ``w`` on ``columns`` and each column's leverage (1 exactly
    when the column is not in the span of the others)."""
    A, U, lam = _gram(columns, w.size)
    coef = A.T @ (U @ ((U.T @ w) / lam))
    leverage = np.sum((U.T @ A) ** 2 / lam[:, None], axis=0)
    return coef, leverage


def _withhold_more(
    cells: Sequence[Cell],
    values: np.ndarray,
    hidden: np.ndarray,
    known: Sequence[np.ndarray],
    leak: tuple[int, np.ndarray],
) -> bool:
    """Withhold what breaks (or at least takes part in) the derivation of ``leak``; False
    when nothing released takes part (then everything must be withheld)."""
    level, w = leak
    released = [i for i in range(len(cells)) if not hidden[i]]
    coef, leverage = _solve(w, [*known, *(cells[i].member for i in released)])
    k = len(known)
    scale = max(1.0, float(np.max(np.abs(coef), initial=0.0)))

    def preference(i: int) -> tuple[bool, float]:
        return (cells[i].level != level, float(values[i]))

    taking_part = [
        i for j, i in enumerate(released) if abs(coef[k + j]) > 1e-9 * scale and values[i] > 0
    ]
    needed = [
        i for j, i in enumerate(released) if i in taking_part and leverage[k + j] > 1.0 - 1e-6
    ]
    if needed:
        hidden[min(needed, key=preference)] = True
        return True
    by_level: dict[int, float] = {}  # level -> its size (its largest cell)
    for i in range(len(cells)):
        by_level[cells[i].level] = max(by_level.get(cells[i].level, 0.0), float(values[i]))
    by_level = {
        lv: size for lv, size in by_level.items() if any(cells[i].level == lv for i in taking_part)
    }
    for other in sorted(by_level, key=lambda lv: (lv == level, by_level[lv])):
        rest = [cells[i].member for i in released if cells[i].level != other]
        if not _in_span(w, _basis([*known, *rest], w.size)):
            hidden[[i for i in released if cells[i].level == other]] = True
            return True
    if taking_part:
        hidden[min(taking_part, key=preference)] = True
        return True
    return False


def protect(
    cells: Sequence[Cell],
    counts: np.ndarray,
    known: Sequence[np.ndarray],
    min_cell: int,
    *,
    whole_levels: Sequence[int] = (),
) -> np.ndarray:
    """Which cells to withhold.

    Parameters
    ----------
    cells:
        The count cells a site would release.
    counts:
        Rows per atom (every entry > 0), so that a cell's count is ``member @ counts``.
    known:
        Vectors over the atoms of counts the site releases elsewhere (its row count...).
    min_cell:
        The site's minimum cell size; ``<= 1`` withholds nothing.
    whole_levels:
        Levels whose every cell is withheld from the start (a level with ``0 < n < min_cell``).

    Returns
    -------
    numpy.ndarray
        Boolean mask over ``cells``.
    """
    hidden = np.zeros(len(cells), dtype=bool)
    if min_cell <= 1 or not cells:
        return hidden
    values = np.array([float(c.member @ counts) for c in cells])
    hidden |= (values > 0) & (values < min_cell)
    whole = set(whole_levels)
    hidden |= np.array([c.level in whole for c in cells])
    found: list[tuple[int, np.ndarray]] = []
    for _ in range(len(cells) + 1):
        leak = _leak(cells, counts, hidden, known, min_cell, found)
        if leak is None:
            return hidden
        found.append(leak)
        if not _withhold_more(cells, values, hidden, known, leak):
            break
    hidden[:] = True
    return hidden
