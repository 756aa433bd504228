"""Seeded partitions of a centralised dataset over simulated sites.

:func:`dirichlet_partition` gives each site a label mix drawn from a Dirichlet distribution
(label skew, the usual non-IID benchmark setting); :func:`proportional_partition` splits a second
set of rows (e.g. a validation split) so that each site gets the same share of each class as it
got of the first. Both return sorted row indices, cover every row exactly once, never mutate
their inputs and take the random generator from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcare.errors import ConfigError

__all__ = ["class_fractions", "dirichlet_partition", "proportional_partition"]


def _check_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ConfigError(f"labels must be one-dimensional, got shape {arr.shape}")
    return arr


def _check_sites(num_sites: int) -> None:
    if isinstance(num_sites, bool) or not isinstance(num_sites, (int, np.integer)) or num_sites < 1:
        raise ConfigError(f"num_sites must be a positive integer, got {num_sites!r}")


def dirichlet_partition(
    labels: np.ndarray,
    num_sites: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_size: int = 10,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Split rows over sites with a Dirichlet label skew.

    For every class, the class's rows are shuffled and cut into ``num_sites`` pieces whose
    sizes follow proportions drawn from ``Dirichlet(alpha, ..., alpha)``. Small ``alpha`` gives
    strongly skewed sites; large ``alpha`` approaches an IID split. Draws are repeated until
    every site has at least ``min_size`` rows.

    Parameters
    ----------
    labels:
        Class label of every row, shape ``(n,)``.
    num_sites:
        Number of sites.
    alpha:
        Dirichlet concentration, positive and finite.
    rng:
        Source of randomness; the same generator state gives the same partition.
    min_size:
        Fewest rows any site may get.
    max_tries:
        Draws to attempt before giving up.

    Returns
    -------
    list of numpy.ndarray
        For each site, the sorted indices of its rows; together they cover every row once.

    Raises
    ------
    ConfigError
        If an argument is invalid, or no draw in ``max_tries`` gave every site ``min_size``
        rows.
    """
    y = _check_labels(labels)
    _check_sites(num_sites)
    if not np.isfinite(alpha) or alpha <= 0:
        raise ConfigError(f"alpha must be positive and finite, got {alpha!r}")
    if min_size < 0 or min_size * num_sites > len(y):
        raise ConfigError(
            f"min_size={min_size!r} is impossible for {len(y)} rows over {num_sites} sites"
        )
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    for _ in range(max_tries):
        parts = _draw_dirichlet(by_class, num_sites, alpha, rng)
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise ConfigError(
        f"no Dirichlet draw in {max_tries} tries gave every one of {num_sites} sites at least "
        f"min_size={min_size} rows with alpha={alpha}; raise alpha or lower min_size"
    )


def _draw_dirichlet(
    by_class: Sequence[np.ndarray], num_sites: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
    for rows in by_class:
        shuffled = rng.permutation(rows)
        shares = rng.dirichlet(np.full(num_sites, float(alpha)))
        cuts = np.floor(np.cumsum(shares)[:-1] * len(shuffled)).astype(int)
        for site, chunk in enumerate(np.split(shuffled, cuts)):
            pieces[site].append(chunk)
    return [np.sort(np.concatenate(p)) for p in pieces]


def class_fractions(
    labels: np.ndarray, parts: Sequence[np.ndarray], classes: Sequence[object] | None = None
) -> np.ndarray:
    """Each site's share of each class.

    Parameters
    ----------
    labels:
        Class label of every row, shape ``(n,)``.
    parts:
        Row indices of each site.
    classes:
        The classes, in the order of the result's rows; default the sorted unique labels.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_classes, n_sites)``: the fraction of class ``c``'s rows held by site ``k``
        (rows sum to 1 for classes present in ``parts``, else 0).
    """
    y = _check_labels(labels)
    values = np.unique(y) if classes is None else np.asarray(classes)
    counts = np.array([[np.sum(y[p] == c) for p in parts] for c in values], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def _apportion(total: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``shares`` (largest remainder)."""
    exact = shares * total
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def proportional_partition(
    labels: np.ndarray,
    fractions: np.ndarray,
    rng: np.random.Generator,
    classes: Sequence[object] | None = None,
) -> list[np.ndarray]:
    """Split rows over sites so that each site gets a given share of every class.

    Parameters
    ----------
    labels:
        Class label of every row, shape ``(n,)``.
    fractions:
        Shape ``(n_classes, n_sites)``, e.g. from :func:`class_fractions`; each row sums to 1.
        Counts are rounded by the largest-remainder method, so they add up exactly.
    rng:
        Source of randomness for which rows of a class go to which site.
    classes:
        The classes in the order of ``fractions``' rows; default the sorted unique labels.

    Returns
    -------
    list of numpy.ndarray
        For each site, the sorted indices of its rows; together they cover every row once.

    Raises
    ------
    ConfigError
        If ``fractions`` has the wrong shape, negative entries, rows not summing to 1, or a
        label is not among ``classes``.
    """
    y = _check_labels(labels)
    values = np.unique(y) if classes is None else np.asarray(classes)
    shares = np.asarray(fractions, dtype=float)
    if shares.ndim != 2 or shares.shape[0] != len(values) or shares.shape[1] < 1:
        raise ConfigError(f"fractions must have shape ({len(values)}, n_sites), got {shares.shape}")
    if np.any(shares < 0) or not np.allclose(shares.sum(axis=1), 1.0):
        raise ConfigError(f"each row of fractions must be >= 0 and sum to 1, got {shares}")
    unknown = np.setdiff1d(np.unique(y), values)
    if unknown.size:
        raise ConfigError(f"labels {unknown.tolist()} are not among classes {values.tolist()}")
    pieces: list[list[np.ndarray]] = [[] for _ in range(shares.shape[1])]
    for c, row in zip(values, shares, strict=True):
        shuffled = rng.permutation(np.flatnonzero(y == c))
        cuts = np.cumsum(_apportion(len(shuffled), row))[:-1]
        for site, chunk in enumerate(np.split(shuffled, cuts)):
            pieces[site].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.intp) for p in pieces]
