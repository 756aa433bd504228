"""Small-cell and complementary suppression for the subgroup tables a site releases.

The rule is the one :mod:`fedcare.analytics.disclosure` applies to analytics answers (the
evaluation layer cannot import analytics, so it is restated here): a count with
``0 < count < min_cell`` is withheld, zero counts are released, and ``min_cell <= 1`` withholds
nothing. Small-cell suppression alone is undone by subtraction (a level's ``n`` from the site's
row count minus the other levels; ``fn`` from ``pos - tp``), so, as
:mod:`fedcare.analytics.complementary` does, every count cell is a vector over *atoms* and a
withheld cell, or a small sum of withheld cells, must not lie in the span of the released
cells (zeros included) and of what the site releases anyway (``known``: its row count, its
overall confusion matrix and score histogram). The atoms are every combination of level,
score bin, label and decision that the bins and the threshold allow, empty or not, so the
check follows what an outsider can compute, not coincidences of the site's rows.

A combination the known counts give by themselves (the ``tp`` of all levels together is the
site's ``tp``) is no new release and is not a leak. When a leak is found, the released cell
the derivation cannot do without (same level first, then the smallest count) is withheld
too, and the check runs again. When no single cell is needed and the leak is a level's ``n``
(also the sum of its bins), the smallest level whose removal breaks every derivation is
withheld whole; otherwise the preferred cell taking part in the least-norm derivation is
withheld and the check runs again. If nothing released takes part, every cell is withheld.

Sums checked: each withheld cell below ``min_cell``, each pair of withheld cells of one level,
the withheld cells of each family (a partition such as the score bins of one level), the
withheld cells of one name across the levels (``tp`` of every level, ``n`` of every level),
and every combination found leaking before.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Cell", "protect"]

#: Relative residual below which a vector counts as in a span.
_TOL = 1e-6
#: Cells (by preference) among which a pair to withhold is sought.
_PAIR_CANDIDATES = 12
#: Eigenvalues of the Gram matrix below this (relative to the largest) do not add to a span.
_RANK_TOL = 1e-10


@dataclass(frozen=True)
class Cell:
    """One released count: its level (index), family (cells of one partition of the level),
    name (the same count in every level, e.g. ``"tp"``) and membership vector over the atoms."""

    level: int
    family: str
    member: np.ndarray
    name: str = ""


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


_Leak = tuple[int, str, np.ndarray]  # (level or -1, family or name, vector)


def _combinations(cells: Sequence[Cell], hidden: np.ndarray) -> list[_Leak]:
    """The withheld sums to check."""
    idx = [int(i) for i in np.flatnonzero(hidden)]
    out: list[_Leak] = [(cells[i].level, cells[i].family, cells[i].member) for i in idx]
    by_level: dict[int, list[int]] = {}
    by_family: dict[tuple[int, str], list[int]] = {}
    for i in idx:
        by_level.setdefault(cells[i].level, []).append(i)
        by_family.setdefault((cells[i].level, cells[i].family), []).append(i)
        if cells[i].name:  # the same count across levels: the site's total minus the rest
            by_family.setdefault((-1, cells[i].name), []).append(i)
    for level, members in by_level.items():
        for a, b in itertools.combinations(members, 2):
            out.append((level, "pair", cells[a].member + cells[b].member))
    for (level, family), members in by_family.items():
        if len(members) > 1:
            out.append((level, family, np.sum([cells[i].member for i in members], axis=0)))
    return out


def _leak(
    cells: Sequence[Cell],
    counts: np.ndarray,
    hidden: np.ndarray,
    known: Sequence[np.ndarray],
    min_cell: int,
    found: list[_Leak],
) -> _Leak | None:
    released = [c.member for c, h in zip(cells, hidden, strict=True) if not h]
    basis = _basis([*known, *released], counts.size)
    public = _basis(known, counts.size)
    for leak in [*found, *_combinations(cells, hidden)]:
        w = leak[2]
        value = float(w @ counts)
        if 0 < value < min_cell and _in_span(w, basis) and not _in_span(w, public):
            return leak
    return None


def _solve(w: np.ndarray, columns: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Least-norm coefficients of ``w`` on ``columns`` and each column's leverage (1 exactly
    when the column is not in the span of the others)."""
    A, U, lam = _gram(columns, w.size)
    coef = A.T @ (U @ ((U.T @ w) / lam))
    leverage = np.sum((U.T @ A) ** 2 / lam[:, None], axis=0)
    return coef, leverage


def _whole_level(
    cells: Sequence[Cell],
    values: np.ndarray,
    hidden: np.ndarray,
    known: Sequence[np.ndarray],
    leak: _Leak,
    released: list[int],
) -> bool:
    """Withhold the smallest other level whose removal breaks the derivation of a level's n."""
    sizes: dict[int, float] = {}
    for i, cell in enumerate(cells):
        sizes[cell.level] = max(sizes.get(cell.level, 0.0), float(values[i]))
    levels = {cells[i].level for i in released} - {leak[0]}
    for other in sorted(levels, key=lambda lv: sizes[lv]):
        rest = [cells[i].member for i in released if cells[i].level != other]
        if not _in_span(leak[2], _basis([*known, *rest], leak[2].size)):
            hidden[[i for i in released if cells[i].level == other]] = True
            return True
    return False


def _pair(
    cells: Sequence[Cell],
    values: np.ndarray,
    hidden: np.ndarray,
    known: Sequence[np.ndarray],
    leak: _Leak,
    candidates: list[int],
) -> bool:
    """Withhold the two cells (of the first :data:`_PAIR_CANDIDATES` taking part, smallest sum
    first) whose removal together breaks every derivation of ``leak``."""
    top = candidates[:_PAIR_CANDIDATES]
    pairs = sorted(itertools.combinations(top, 2), key=lambda ab: values[ab[0]] + values[ab[1]])
    released = [i for i in range(len(cells)) if not hidden[i]]
    for a, b in pairs:
        rest = [cells[i].member for i in released if i not in (a, b)]
        if not _in_span(leak[2], _basis([*known, *rest], leak[2].size)):
            hidden[[a, b]] = True
            return True
    return False


def _withhold_more(
    cells: Sequence[Cell],
    values: np.ndarray,
    hidden: np.ndarray,
    known: Sequence[np.ndarray],
    leak: _Leak,
) -> bool:
    """Withhold what breaks (or at least takes part in) the derivation of ``leak``; False
    when nothing released takes part (then everything must be withheld)."""
    level, family, w = leak
    released = [i for i in range(len(cells)) if not hidden[i]]
    coef, leverage = _solve(w, [*known, *(cells[i].member for i in released)])
    k = len(known)
    scale = max(1.0, float(np.max(np.abs(coef), initial=0.0)))

    def preference(i: int) -> tuple[bool, float]:
        return (cells[i].level != level, float(values[i]))

    part = [j for j in range(len(released)) if abs(coef[k + j]) > 1e-9 * scale]
    needed = [released[j] for j in part if leverage[k + j] > 1.0 - 1e-6]
    if needed:
        hidden[min(needed, key=preference)] = True
        return True
    if family == "n" and _whole_level(cells, values, hidden, known, leak, released):
        return True
    if _pair(
        cells, values, hidden, known, leak, sorted((released[j] for j in part), key=preference)
    ):
        return True
    if part:
        hidden[min((released[j] for j in part), key=preference)] = True
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
        Rows per atom (zero for the empty ones), so that a cell's count is ``member @ counts``.
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
    found: list[_Leak] = []
    for _ in range(len(cells) + 1):
        leak = _leak(cells, counts, hidden, known, min_cell, found)
        if leak is None:
            return hidden
        found.append(leak)
        if not _withhold_more(cells, values, hidden, known, leak):
            break
    hidden[:] = True
    return hidden
