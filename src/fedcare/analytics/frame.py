"""A site's table for analytics: a pandas DataFrame with named columns.

Built-in datasets give arrays; :func:`site_frame` names their feature columns (the dataset's
feature names, else ``x0``, ``x1``, ...) and adds ``label`` (binary tasks) or ``time`` and
``event`` (survival). A site with a common-data-model DataFrame passes it directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fedcare.data.base import Dataset, SiteData
from fedcare.errors import ConfigError, DataError

__all__ = ["column", "site_frame"]


def site_frame(data: SiteData, feature_names: Sequence[str] = ()) -> pd.DataFrame:
    """All of a site's rows (train then test) as a DataFrame.

    Raises
    ------
    DataError
        If the features are not a 2-D table or ``feature_names`` has the wrong length.
    """
    rows = Dataset.concat([data.train, data.test])
    if rows.X.ndim != 2:
        raise DataError(
            f"site {data.site_id!r}: analytics needs tabular features, got shape {rows.X.shape}"
        )
    width = rows.X.shape[1]
    names = list(feature_names) or [f"x{i}" for i in range(width)]
    if len(names) != width:
        raise DataError(
            f"site {data.site_id!r}: {len(names)} feature names for {width} feature columns"
        )
    frame = pd.DataFrame(np.asarray(rows.X, dtype=np.float64), columns=names)
    if rows.time is None:
        frame["label"] = np.asarray(rows.y, dtype=np.float64)
    else:
        frame["time"] = np.asarray(rows.time, dtype=np.float64)
        frame["event"] = np.asarray(rows.y, dtype=np.float64)
    return frame


def column(frame: pd.DataFrame, name: str, *, what: str) -> np.ndarray:
    """Column ``name`` as float64 (non-numbers become NaN); errors name ``what``."""
    if name not in frame.columns:
        raise ConfigError(
            f"{what}: unknown variable {name!r}; columns: {sorted(map(str, frame.columns))}"
        )
    return np.asarray(pd.to_numeric(frame[name], errors="coerce"), dtype=np.float64)
