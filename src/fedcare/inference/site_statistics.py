"""A site freezes its own training statistics into a bundle it takes.

A model trained with local scaling (or mean imputation without global scaling) saw each site's
rows standardized with *that site's* statistics, so its bundle carries none
(``preprocessing.statistics: site``). The site that takes it computes them from the same
training rows its preprocessing used during training and freezes them in: the bundle it keeps
(``site-frozen``) then predicts exactly as its training-time preprocessing did. The statistics
stay at the site.
"""

from __future__ import annotations

import numpy as np

from fedcare.errors import ValidationError
from fedcare.inference.bundle import (
    DESCRIPTION,
    MANIFEST,
    STATISTICS,
    ModelBundle,
    json_bytes,
    npz_bytes,
    with_manifest,
)
from fedcare.inference.frozen import statistics_of_rows

__all__ = ["freeze_local_statistics"]


def freeze_local_statistics(
    bundle: ModelBundle, train_X: np.ndarray, site: str
) -> dict[str, bytes]:
    """The files of ``bundle`` with this site's training statistics frozen in (a model trained
    with local scaling or local-mean imputation, taken by site ``site``).

    ``train_X``: the site's raw training rows (features in the bundle's order, ``NaN`` for
    missing), the rows the site's preprocessing used during training. The statistics stay at
    the site with the bundle; ``source.frozen_from`` keeps the original bundle's hash.

    Raises
    ------
    ValidationError
        If the bundle does not use site statistics, or ``train_X`` has another width.
    """
    if bundle.statistics_source != "site":
        raise ValidationError(
            f"the bundle's statistics are {bundle.statistics_source!r}, not a site's own: "
            "nothing to freeze"
        )
    stats = statistics_of_rows(train_X)
    if stats["mean"].shape != bundle.input_shape:
        raise ValidationError(
            f"training rows have {stats['mean'].shape[0]} features, the model {bundle.input_shape}"
        )
    description = dict(bundle.description)
    description["preprocessing"] = {**description["preprocessing"], "statistics": "site-frozen"}
    description["source"] = {
        **description.get("source", {}),
        "frozen_by": site,
        "frozen_from": bundle.bundle_hash,
        "frozen_rows": len(train_X),
    }
    files = {n: d for n, d in bundle.files.items() if n != MANIFEST}
    files[DESCRIPTION] = json_bytes(description)
    files[STATISTICS] = npz_bytes(stats)
    return with_manifest(files)
