"""Reading a site's table for a data check: through the loaders package when it is there."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fedcare.data.cdm._yaml import read_yaml
from fedcare.data.cdm.harmonize import with_source_names
from fedcare.data.cdm.mapping import SiteMapping
from fedcare.data.loaders.base import UNREADABLE_ATTR, UNREADABLE_LINE
from fedcare.errors import ConfigError, DataError

__all__ = ["read_source", "read_table"]


def _pandas_table(path: Path, header: bool) -> pd.DataFrame:
    """CSV (every value as text, so missing codes like ``?`` stay visible) or Parquet.

    A CSV line with more fields than the header is left out and counted in
    ``frame.attrs["unreadable_rows"]`` (:mod:`fedcare.data.cdm.invalid_rows`).
    """
    bad: list[int] = []
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, header=0 if header else None, sep=None,
            engine="python", on_bad_lines=lambda f: bad.append(len(f)),
        )  # fmt: skip
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read data file {path}: {err}") from None
    if bad:
        frame.attrs[UNREADABLE_ATTR] = {UNREADABLE_LINE: len(bad)}
    return frame


def _load_source(source: Mapping[str, Any], base_dir: Path, header: bool) -> pd.DataFrame:
    try:  # the loaders package (issue 6.3) reads every kind of source; CSV/Parquet without it
        load_table = importlib.import_module("fedcare.data.loaders").load_table
    except (ImportError, AttributeError):
        load_table = None
    if load_table is not None:
        spec = dict(source)
        if spec.get("kind") == "csv" and not header:  # the mapping names the columns
            spec.setdefault("header", False)
        table: pd.DataFrame = load_table(spec, base_dir=base_dir, count_unreadable=True)
        return table
    kind = source.get("kind")
    if kind not in ("csv", "parquet") or "path" not in source:
        raise ConfigError(f"data source {dict(source)}: needs kind csv|parquet and a path")
    path = Path(str(source["path"]))
    return _pandas_table(path if path.is_absolute() else base_dir / path, header)


def read_table(data: str | Path, mapping: SiteMapping | None = None) -> pd.DataFrame:
    """The raw table at ``data``: a CSV/Parquet file or a loader source YAML.

    A CSV line with more fields than the header is left out and counted in
    ``attrs["unreadable_rows"]``; :func:`~fedcare.data.cdm.check_table` fails on them.

    A mapping with ``source_columns`` marks a CSV file without a header row.
    """
    path = Path(data)
    header = mapping is None or mapping.source_columns is None
    if path.suffix.lower() in (".yaml", ".yml"):
        source = read_yaml(path, "data source")
        if not isinstance(source, dict):
            raise ConfigError(f"data source {path}: expected a mapping with 'kind'")
        return read_source(source, mapping, base_dir=path.parent)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    table = _pandas_table(path, header)
    return table if mapping is None else with_source_names(table, mapping)


def read_source(
    source: Mapping[str, Any], mapping: SiteMapping | None = None, *, base_dir: Path | None = None
) -> pd.DataFrame:
    """The raw table a loader spec (``{"kind": "csv", "path": ...}``) describes."""
    header = mapping is None or mapping.source_columns is None
    table = _load_source(source, base_dir or Path.cwd(), header)
    return table if mapping is None else with_source_names(table, mapping)
