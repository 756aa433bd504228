"""Complementary suppression: no withheld cell can be derived from what one answer releases.

Small-cell suppression alone can be undone by subtraction: a site's released ``count`` of 261
next to age bins that sum to 258 with ``outside: 0`` gives the one withheld bin (3); a cohort
count of 8 next to a released bin of 5 gives a withheld 3. Before a site releases an answer,
:func:`complementary_withholding` therefore looks at every count cell of the whole answer (all
its queries, cohorts included) as a vector over the site's rows (:mod:`.cells`) and asks which
*linear combinations* of the withheld cells the released numbers determine: a combination is
determined when its vector lies in the span of the released cells' vectors, the value vectors
released with them (sums, sums of squares, cross-products) and the all-ones vector (the site's
row count, taken as known whenever it is at least ``min_cell``).

The rule, applied until nothing leaks:

* a cell withheld as small (below ``min_cell``, or a quantile count whose complement is) must
  never be determined, nor any withheld cell below ``min_cell``, and
* a sum of withheld cells whose value is small (``0 < sum < min_cell``) must not be
  determined; the sums checked are those of each array (e.g. all
  withheld bins), of each query (bins with ``outside``), of each pair of withheld cells of one
  query, of the whole answer, and every combination found leaking before.

When one leaks, the released cell that the derivation cannot do without (removing it breaks
the derivation; of the same query first, then the smallest count, non-zero first) is withheld
too, with the sums released alongside it. When there are several derivations (a binary
variable's bin and its sum), the smallest cell taking part in one is withheld and the check
runs again. If no released cell takes part (the row count alone gives the leak away), every
count of the answer is withheld.

Zero cells withheld under ``suppress_zeros`` are not protected by this rule (their vector is
empty, so the site cannot tell what an outsider could infer about them). The vectors are the
site's real rows, so a relation that holds only by coincidence in its data counts as known
too: the rule errs towards withholding more.

The rule covers one answer (one task: all queries of a job in round 1, or one quantile search
step); counts released in other rounds of a quantile search are not part of it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedcare.analytics.cells import CountCells, answer_cells
from fedcare.analytics.disclosure import SUPPRESSED
from fedcare.analytics.spec import AnalyticsSpec

__all__ = ["Cell", "complementary_withholding", "derivable", "leaks"]

#: Relative residual below which a vector counts as in a span.
_TOL = 1e-6
#: Singular values below this (relative to the largest) do not add to a span.
_RANK_TOL = 1e-10
#: Rounds of (answer, find leaks, withhold more) at most; each withholds at least one cell.
_MAX_ROUNDS = 10_000


@dataclass(frozen=True)
class Cell:
    """One count cell: its array key, flat index, vectors, count and whether it is withheld."""

    key: str
    index: int
    member: np.ndarray
    values: tuple[np.ndarray, ...]
    count: float
    hidden: bool
    primary: bool = False

    @property
    def path(self) -> str:
        return self.key.rsplit("/", 1)[0]


def _basis(known: Sequence[np.ndarray]) -> np.ndarray:
    """An orthonormal basis (columns) of the span of ``known``."""
    if not known:
        return np.zeros((0, 0))
    A = np.column_stack([k / (np.linalg.norm(k) or 1.0) for k in known])
    U, sv, _ = np.linalg.svd(A, full_matrices=False)
    return U[:, sv > _RANK_TOL * max(1.0, float(sv[0]) if len(sv) else 1.0)]


def _in_span(target: np.ndarray, basis: np.ndarray) -> bool:
    scale = float(np.linalg.norm(target))
    if scale == 0.0:
        return True
    if basis.size == 0:
        return False
    t = np.asarray(target, dtype=np.float64) / scale
    return bool(np.linalg.norm(t - basis @ (basis.T @ t)) <= _TOL)


def derivable(target: np.ndarray, known: Sequence[np.ndarray]) -> bool:
    """Whether ``target`` is a linear combination of ``known`` (numerically)."""
    return _in_span(target, _basis(known))


def _known(cells: Sequence[Cell], ones: np.ndarray | None) -> tuple[list[np.ndarray], list[int]]:
    """Released vectors and, for each, the index of its cell in ``cells`` (-1: the row count)."""
    vectors, owners = [], []
    if ones is not None:
        vectors.append(ones)
        owners.append(-1)
    for i, c in enumerate(cells):
        if not c.hidden:
            for v in (c.member, *c.values):
                vectors.append(v)
                owners.append(i)
    return vectors, owners


def _combinations(cells: Sequence[Cell]) -> list[tuple[int, ...]]:
    """Sets of withheld cells whose sum is checked (see the module docstring)."""
    hidden = [i for i, c in enumerate(cells) if c.hidden]
    groups: dict[str, list[int]] = {}
    for i in hidden:
        groups.setdefault(cells[i].key, []).append(i)
        groups.setdefault(cells[i].path + "/", []).append(i)
    out: set[tuple[int, ...]] = {tuple(g) for g in groups.values() if len(g) > 1}
    for key, group in groups.items():
        if key.endswith("/"):
            out.update(itertools.combinations(group, 2))
    if len(hidden) > 1:
        out.add(tuple(hidden))
    return sorted(out)


def leaks(
    cells: Sequence[Cell],
    min_cell: int,
    *,
    ones: np.ndarray | None = None,
    extra: Sequence[tuple[int, ...]] = (),
) -> list[tuple[int, ...]]:
    """The withheld cells (singletons) and small sums of withheld cells the released cells of
    ``cells`` (and ``ones``, the row count, when given) determine, as index tuples."""
    known, _ = _known(cells, ones)
    basis = _basis(known)
    out: list[tuple[int, ...]] = []
    for i, c in enumerate(cells):
        protect = c.primary or c.count < min_cell
        if c.hidden and c.count > 0 and protect and _in_span(c.member, basis):
            out.append((i,))
    for combo in [*_combinations(cells), *extra]:
        if not all(cells[i].hidden for i in combo):
            continue
        total = sum(cells[i].count for i in combo)
        if 0 < total < min_cell:
            target = np.sum([cells[i].member for i in combo], axis=0)
            if _in_span(target, basis):
                out.append(combo)
    return out


def _needed(cells: Sequence[Cell], combo: tuple[int, ...], ones: np.ndarray | None) -> int | None:
    """The released cell to withhold against ``combo``'s derivation (see the module
    docstring); ``None`` if only the row count takes part.

    Only cells with a coefficient in the minimum-norm derivation are tried: a cell every
    derivation needs has one there.
    """
    target = np.asarray(sum(cells[i].member for i in combo), dtype=np.float64)
    paths = {cells[i].path for i in combo}
    vectors, owners = _known(cells, ones)
    A = np.column_stack([v / (np.linalg.norm(v) or 1.0) for v in vectors])
    coef, *_ = np.linalg.lstsq(A, target, rcond=None)
    floor = 1e-12 * max(1.0, float(np.abs(coef).max()))
    taking_part = {owners[k] for k in np.flatnonzero(np.abs(coef) > floor)} - {-1}
    candidates = sorted(
        taking_part,
        key=lambda i: (cells[i].path not in paths, cells[i].count == 0, cells[i].count, i),
    )
    for i in candidates:
        trial = [c if j != i else _hidden(c) for j, c in enumerate(cells)]
        if not derivable(target, _known(trial, ones)[0]):
            return i
    return candidates[0] if candidates else None


def _hidden(cell: Cell) -> Cell:
    return dataclasses.replace(cell, hidden=True)


def _cells(
    found: Mapping[str, CountCells],
    arrays: Mapping[str, np.ndarray],
    primary: Mapping[str, np.ndarray],
) -> list[Cell]:
    out = []
    for key in sorted(found):
        mask = np.asarray(arrays[f"{key}{SUPPRESSED}"]).ravel().astype(bool)
        first = np.asarray(primary[f"{key}{SUPPRESSED}"]).ravel().astype(bool)
        cells = found[key]
        for i, member in enumerate(cells.members):
            values = tuple(cells.values[i])
            count = float(member.sum())
            out.append(Cell(key, i, member, values, count, bool(mask[i]), bool(first[i])))
    return out


def complementary_withholding(
    frame: pd.DataFrame,
    spec: AnalyticsSpec,
    plan: Mapping[str, Any],
    answer: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
    min_cell: int,
) -> dict[str, np.ndarray]:
    """Masks (by array key) of the cells to withhold beyond small-cell suppression.

    ``answer(withhold)`` returns the answer's arrays (without noise) with ``withhold`` applied;
    it is called until no leak remains (see the module docstring).
    """
    if min_cell <= 1:
        return {}
    found = answer_cells(frame, spec, plan.get("only"), plan.get("thresholds") or {})
    ones = np.ones(len(frame)) if len(frame) >= min_cell else None
    withhold = {key: np.zeros(len(c.members), dtype=bool) for key, c in found.items()}
    seen: list[tuple[int, ...]] = []
    primary = answer({})
    if not any(np.any(primary[f"{key}{SUPPRESSED}"]) for key in found):
        return {}  # nothing withheld: nothing to derive
    for _ in range(_MAX_ROUNDS):
        cells = _cells(found, answer(withhold), primary)
        leaking = leaks(cells, min_cell, ones=ones, extra=seen)
        if not leaking:
            break
        seen.extend(c for c in leaking if len(c) > 1 and c not in seen)
        more = _needed(cells, leaking[0], ones)
        if more is None:  # the row count alone gives it away: withhold every count
            return {key: np.ones(len(c.members), dtype=bool) for key, c in found.items()}
        withhold[cells[more].key][cells[more].index] = True
    return {key: mask for key, mask in withhold.items() if mask.any()}
