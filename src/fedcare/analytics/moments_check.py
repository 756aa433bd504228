"""Plausibility of the feature moments one site reports (round 0 of a globally scaled study).

The coordinator cannot see a site's rows, only its per-feature ``count``, ``sum``, ``sumsq``
and ``suppressed`` flags, so a site could report sums that move the global standardization
every other site trains with. Two layers of checks, each rejecting the one site it names:

1. **Consistency** (:func:`moments_problem`): the four arrays, float64, of the study's feature
   width; finite; counts whole, ``>= 0`` and at most the rows the site declared (a count is
   smaller where values are missing); suppressed features report zeros; and the implied
   variance ``sumsq/count - (sum/count)^2`` is not negative (beyond rounding).
2. **Robust outliers** (:func:`outlying_sites`, with three or more consistent sites): for each
   site ``i`` and feature, the distance of its mean from the median of the other sites' means,
   in units of the other sites' pooled *within-site* SD, must be at most
   :data:`MAX_MEAN_DISTANCE`; and its own SD at most :data:`MAX_SD_RATIO` times that pooled
   SD. The scale comes from the others only, so a poisoned site cannot widen it.

Why these thresholds: hospitals differ for real, and the distances above measure that
difference. Over the built-in datasets' honest sites the largest distance is 8.4 (TCGA-BRCA
region-5 on a binary feature that is 0.92 there and 0.01-0.02 elsewhere; heart disease's four
hospitals: 2.0; eICU: 3.8) and the largest SD ratio is 5.2 (TCGA-BRCA). Twenty leaves a margin
of more than twice both, while a mean 20 SDs from every other hospital's is no patient
population (it is a unit or coding error, or a lie). What stays possible: a site can still
shift its reported means by less than that, which is indistinguishable from case mix with so
few sites; with two sites there is no "others" to compare with, so only layer 1 applies.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedcare.records.arrays import ArrayRecord

__all__ = ["MAX_MEAN_DISTANCE", "MAX_SD_RATIO", "moments_problem", "outlying_sites"]

#: Largest accepted distance of a site's feature mean from the others' median, in pooled SDs.
MAX_MEAN_DISTANCE = 20.0
#: Largest accepted ratio of a site's feature SD to the other sites' pooled within-site SD.
MAX_SD_RATIO = 20.0
KEYS = ("count", "sum", "sumsq", "suppressed")


def moments_problem(site: str, part: ArrayRecord, *, width: int, max_rows: int) -> str | None:
    """Why ``part`` cannot be one site's honest feature moments, or ``None`` (layer 1)."""
    template = ArrayRecord({k: np.zeros(width) for k in KEYS})
    if sorted(part) != sorted(KEYS):
        return f"statistics from site {site!r} have arrays {sorted(part)}, expected {list(KEYS)}"
    shapes = {k: tuple(part[k].shape) for k in KEYS if part[k].shape != (width,)}
    if shapes:
        return f"statistics from site {site!r} have shapes {shapes}, expected ({width},) each"
    dtypes = {k: str(part[k].dtype) for k in KEYS if part[k].dtype != template[k].dtype}
    if dtypes:
        return f"statistics from site {site!r} have dtypes {dtypes}, expected float64"
    if not part.all_finite():
        return f"statistics from site {site!r} have NaN or infinite values"
    count, total, sumsq, flag = (part[k] for k in KEYS)
    if np.any(count < 0) or np.any(count != np.round(count)) or np.any(count > max_rows):
        return (
            f"statistics from site {site!r} have counts {count.tolist()}; expected whole "
            f"numbers from 0 to the {max_rows} rows it declared"
        )
    zeroed = (flag == 1) & ((count != 0) | (total != 0) | (sumsq != 0))
    if (
        np.any((flag != 0) & (flag != 1))
        or np.any(zeroed)
        or np.any((flag == 0) & (count == 0) & (total != 0))
    ):
        return f"statistics from site {site!r} have inconsistent suppressed features"
    spread = count * sumsq - np.square(total)  # count^2 * variance
    tolerance = 1e-9 * np.abs(count * sumsq) + 1e-12
    if np.any(spread < -tolerance):
        bad = np.flatnonzero(spread < -tolerance).tolist()
        return f"statistics from site {site!r} imply a negative variance for features {bad}"
    return None


def _mean_var(part: ArrayRecord) -> tuple[np.ndarray, np.ndarray]:
    count = part["count"]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, part["sum"] / count, np.nan)
        var = np.where(count > 0, np.maximum(part["sumsq"] / count - np.square(mean), 0.0), np.nan)
    return mean, var


def _distances(part: ArrayRecord, others: list[ArrayRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Per feature: (|mean - others' median mean| / s, SD / s), s the others' pooled SD."""
    mean, var = _mean_var(part)
    other_means = np.array([_mean_var(o)[0] for o in others])
    present = ~np.isnan(other_means)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.array(
            [
                np.median(col[ok]) if ok.any() else np.nan
                for col, ok in zip(other_means.T, present.T, strict=True)
            ]
        )
        n = sum(o["count"] for o in others)
        within = sum(
            np.where(
                o["count"] > 0, o["sumsq"] - np.square(o["sum"]) / np.maximum(o["count"], 1), 0.0
            )
            for o in others
        )
        scale = np.sqrt(np.maximum(within, 0.0) / np.maximum(n, 1))
        usable = (scale > 0) & ~np.isnan(mean) & ~np.isnan(centre)
        distance = np.where(usable, np.abs(mean - centre) / scale, 0.0)
        ratio = np.where(usable, np.sqrt(var) / scale, 0.0)
    return distance, ratio


def _worst(site: str, part: ArrayRecord, others: list[ArrayRecord]) -> tuple[float, str]:
    """(score, reason): score > 1 when a threshold is exceeded."""
    distance, ratio = _distances(part, others)
    j, k = int(np.argmax(distance)), int(np.argmax(ratio))
    by_mean, by_sd = distance[j] / MAX_MEAN_DISTANCE, ratio[k] / MAX_SD_RATIO
    if by_mean >= by_sd:
        return by_mean, (
            f"statistics from site {site!r}: feature {j}'s mean is {distance[j]:.3g} pooled "
            f"SDs from the other sites' median (at most {MAX_MEAN_DISTANCE:g} accepted)"
        )
    return by_sd, (
        f"statistics from site {site!r}: feature {k}'s SD is {ratio[k]:.3g} times the "
        f"other sites' pooled SD (at most {MAX_SD_RATIO:g} accepted)"
    )


def outlying_sites(parts: Mapping[str, ArrayRecord]) -> dict[str, str]:
    """Sites whose consistent moments are far outside the others' (layer 2), with reasons.

    The worst site is removed first and the rest compared again, while three or more remain
    (two others to take a median of), so one poisoned site among three cannot drag an honest
    one out with it. Gives ``{}`` for fewer than three sites.
    """
    left = dict(parts)
    out: dict[str, str] = {}
    while len(left) >= 3:
        scored = {s: _worst(s, p, [o for t, o in left.items() if t != s]) for s, p in left.items()}
        site = max(sorted(scored), key=lambda s: scored[s][0])
        score, reason = scored[site]
        if not score > 1.0:
            break
        out[site] = reason
        del left[site]
    return out
