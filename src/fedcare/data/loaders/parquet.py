"""Parquet sources (a file or a folder of files), read with pyarrow."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedcare.data.loaders.base import ParquetSource, resolve_path
from fedcare.data.loaders.csv import select_columns
from fedcare.errors import DataError

__all__ = ["load_parquet"]


def load_parquet(spec: ParquetSource, base_dir: Path | None) -> pd.DataFrame:
    """Read a Parquet file or dataset folder, only the requested columns when given.

    Raises
    ------
    DataError
        The path is missing, the file is not Parquet, or a requested column is absent.
    """
    path = resolve_path(spec.path, base_dir)
    if not path.exists():
        raise DataError(f"Parquet source {path} does not exist")
    where = f"Parquet source {path}"
    try:
        schema = pq.read_schema(path) if path.is_file() else pq.ParquetDataset(path).schema
        if spec.columns is not None:
            missing = [c for c in spec.columns if c not in schema.names]
            if missing:
                raise DataError(
                    f"{where} has no column(s) {', '.join(map(repr, missing))}; "
                    f"it has {', '.join(schema.names)}"
                )
        table = pq.read_table(path, columns=list(spec.columns) if spec.columns else None)
    except (OSError, pa.ArrowException) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"cannot read {where}: {first}") from err
    return select_columns(table.to_pandas(), spec.columns, where)
