"""From a checked, harmonized table to a site's train/test arrays (the same columns everywhere).

Features are the schema's ``feature`` variables in schema order; a category becomes one 0/1
column per code except the first (the reference level), in the schema's code order, so every
site produces the same columns whatever codes it saw. Values the check found invalid (out of
range, unmapped codes, non-integers, non-booleans) become ``NaN`` like missing ones; the site's
preprocessing imputes them. Rows without a label cannot be trained on: they are left out of
the arrays and counted in the report (``rows_without_label`` in :func:`to_site_data`'s info).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fedcare.data.base import Dataset, FederatedDataset, SiteData, TaskType
from fedcare.data.cdm.invalid_rows import without_invalid_rows
from fedcare.data.cdm.mapping import SiteMapping
from fedcare.data.cdm.report import CheckResult, check_table
from fedcare.data.cdm.schema import Schema
from fedcare.errors import ConfigError, DataError

__all__ = [
    "ANALYTICS_FRAMES",
    "analysis_frame",
    "build_federation",
    "feature_names",
    "feature_units",
    "to_site_data",
]

#: Key of :attr:`FederatedDataset.extra` holding each site's harmonized table by site id.
ANALYTICS_FRAMES = "analytics_frames"


def feature_names(schema: Schema) -> tuple[str, ...]:
    """The feature columns every site produces for ``schema``."""
    names: list[str] = []
    for v in schema.features:
        if v.type == "category":
            names += [f"{v.name}_{code}" for code in (v.codes or ())[1:]]
        elif v.type != "date":
            names.append(v.name)
    return tuple(names)


def feature_units(schema: Schema) -> dict[str, str | None]:
    """The unit of each feature column of :func:`feature_names` (``None`` where the schema
    gives none; a category's 0/1 columns have none)."""
    units: dict[str, str | None] = {}
    for v in schema.features:
        if v.type == "category":
            units.update({f"{v.name}_{code}": None for code in (v.codes or ())[1:]})
        elif v.type != "date":
            units[v.name] = v.unit
    return units


def analysis_frame(result: CheckResult) -> pd.DataFrame:
    """The harmonized table with the schema's variable names, every row kept, and values the
    check found invalid set to missing (what a site's analytics read)."""
    return _clean(result)


def _clean(result: CheckResult) -> pd.DataFrame:
    frame = result.frame.copy()
    for p in result.problems:
        if p.kind != "type-error" and p.variable in frame.columns:
            frame.loc[p.row, p.variable] = None
    return frame


def _features(frame: pd.DataFrame, schema: Schema) -> np.ndarray:
    columns: list[np.ndarray] = []
    for v in schema.features:
        if v.name not in frame.columns:
            width = len(v.codes or ()) - 1 if v.type == "category" else 1
            columns += [np.full(len(frame), np.nan)] * width
        elif v.type == "category":
            values = frame[v.name]
            for code in (v.codes or ())[1:]:
                hot = (values == code).astype(float).to_numpy()
                columns.append(np.where(values.isna().to_numpy(), np.nan, hot))
        elif v.type != "date":
            columns.append(frame[v.name].to_numpy(dtype=float))
    return np.column_stack(columns) if columns else np.empty((len(frame), 0))


def _split(label: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for value in np.unique(label):
        rows = rng.permutation(np.flatnonzero(label == value))
        k = round(test_fraction * len(rows))
        if len(rows) >= 2:
            k = min(max(k, 1), len(rows) - 1)
        test.append(rows[:k])
    test_idx = np.sort(np.concatenate(test)) if test else np.array([], dtype=int)
    train_idx = np.setdiff1d(np.arange(len(label)), test_idx)
    return train_idx, test_idx


def to_site_data(
    result: CheckResult, schema: Schema, site_id: str, *, test_fraction: float, seed: int
) -> tuple[SiteData, dict[str, int]]:
    """The site's arrays and ``{"rows": n, "rows_without_label": k}``.

    The split is stratified by label (by event for survival) and seeded by ``seed``.

    Raises
    ------
    ConfigError
        If the schema has no label (or event) variable, or ``test_fraction`` is not in (0, 1).
    DataError
        If no row has a label.
    """
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = schema.with_role("label") + schema.with_role("event")
    if not labels:
        raise ConfigError(f"schema {schema.path}: no variable has role 'label' or 'event'")
    frame = _clean(result)
    label_name = labels[0].name
    times = schema.with_role("time")
    needed = [label_name] + [t.name for t in times]
    keep = frame[needed].notna().all(axis=1).to_numpy()
    if not keep.any():
        raise DataError(f"site {site_id}: no row has a {label_name!r} value")
    kept = frame[keep]
    y = kept[label_name].to_numpy(dtype=float).astype(np.int64)
    X = _features(kept, schema)
    time = kept[times[0].name].to_numpy(dtype=float) if times else None
    train_idx, test_idx = _split(y, test_fraction, seed)
    data = Dataset(X=X, y=y, time=time)
    site = SiteData(site_id, train=data.take(train_idx), test=data.take(test_idx))
    return site, {"rows": len(frame), "rows_without_label": int((~keep).sum())}


def build_federation(
    schema: Schema,
    sites: Mapping[str, tuple[pd.DataFrame, SiteMapping]],
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
    skip_invalid: float | None = None,
) -> FederatedDataset:
    """A simulated federation from each site's raw table and mapping (simulation only).

    ``skip_invalid`` (a study's ``dataset.skip_invalid_rows.max_fraction``): each site leaves
    out its invalid rows (:func:`fedcare.data.cdm.invalid_rows.without_invalid_rows`) as a site
    agent would, ``extra["invalid_rows"]`` counting them per site by reason; a site with more
    than that fraction invalid is refused, naming the count and the fraction.

    A site whose data fails the required checks is refused, as a site agent would: it is left
    out, and ``extra["refused_sites"]`` gives its report's summary. ``extra["data_checks"]``
    holds every site's shareable counts, ``extra[ANALYTICS_FRAMES]`` each kept site's
    :func:`analysis_frame` (simulated sites answer analytics on it, as an agent does).

    Raises
    ------
    DataError
        If every site is refused.
    """
    kept: list[SiteData] = []
    refused: dict[str, str] = {}
    shared: dict[str, object] = {}
    frames: dict[str, pd.DataFrame] = {}
    invalid_rows: dict[str, dict[str, object]] = {}
    for site_id, (table, mapping) in sites.items():
        result = check_table(table, schema, mapping)
        if skip_invalid is not None:
            kept_rows, invalid = without_invalid_rows(table, result.problems)
            invalid_rows[site_id] = invalid.to_dict()
            if invalid.fraction > skip_invalid:
                refused[site_id] = (
                    f"{invalid.count} of {invalid.rows} rows are invalid "
                    f"({invalid.fraction:.1%}), more than the {skip_invalid:.1%} the study allows "
                    f"to skip: {invalid.reasons_text()}"
                )
                continue
            result = check_table(kept_rows, schema, mapping)
        shared[site_id] = result.report.shareable()
        if not result.report.passed:
            refused[site_id] = result.report.summary
            continue
        data, _ = to_site_data(result, schema, site_id, test_fraction=test_fraction, seed=seed)
        kept.append(data)
        frames[site_id] = analysis_frame(result)
    if not kept:
        raise DataError(f"schema {schema.path}: every site failed its data check: {refused}")
    task: TaskType = "survival" if schema.with_role("time") else "binary"
    return FederatedDataset(
        name=schema.name,
        task=task,
        sites=tuple(kept),
        feature_names=feature_names(schema),
        metrics=("cindex",) if task == "survival" else ("accuracy", "auroc"),
        description=schema.description,
        extra={
            "refused_sites": refused,
            "data_checks": shared,
            ANALYTICS_FRAMES: frames,
            **({"invalid_rows": invalid_rows} if skip_invalid is not None else {}),
        },
    )
