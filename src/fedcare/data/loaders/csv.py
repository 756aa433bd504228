"""CSV (delimited text) sources, read with pandas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fedcare.data.loaders.base import UNREADABLE_ATTR, UNREADABLE_LINE, CsvSource, resolve_path
from fedcare.errors import DataError

__all__ = ["load_csv"]


def load_csv(
    spec: CsvSource, base_dir: Path | None, *, count_unreadable: bool = False
) -> pd.DataFrame:
    """Read a CSV file; see :class:`~fedcare.data.loaders.base.CsvSource` for the options.

    Raises
    ------
    DataError
        The file is missing or unreadable, cannot be parsed, or lacks a requested column.

    With ``count_unreadable`` a line with more fields than the header is left out and counted
    in ``frame.attrs["unreadable_rows"]`` instead (a data check fails on them unless the study
    skips invalid rows: :mod:`fedcare.data.cdm.invalid_rows`).
    """
    path = resolve_path(spec.path, base_dir)
    if not path.is_file():
        raise DataError(f"CSV source {path} does not exist or is not a file")
    options: dict[str, Any] = {
        "sep": spec.sep,
        "encoding": spec.encoding,
        "na_values": list(spec.na_values) or None,
        "header": 0 if spec.header else None,
        "dtype": str if spec.text else None,
        "keep_default_na": not spec.text,
    }
    bad: list[int] = []
    try:
        try:
            frame = pd.read_csv(path, low_memory=False, **options)
        except pd.errors.ParserError:
            if not count_unreadable:
                raise
            # again, counting the lines that do not fit
            frame = pd.read_csv(
                path, engine="python", on_bad_lines=lambda f: bad.append(len(f)), **options
            )
    except (OSError, UnicodeDecodeError, LookupError, ValueError, pd.errors.ParserError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"cannot read CSV source {path}: {first}") from err
    if bad:
        frame.attrs[UNREADABLE_ATTR] = {UNREADABLE_LINE: len(bad)}
    if not spec.header:
        frame.columns = [str(c) for c in frame.columns]
    return select_columns(frame, spec.columns, f"CSV source {path}")


def select_columns(frame: pd.DataFrame, columns: tuple[str, ...] | None, what: str) -> pd.DataFrame:
    """The named columns of ``frame`` in that order, or all when ``columns`` is None."""
    if columns is None:
        return frame
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{what} has no column(s) {', '.join(map(repr, missing))}; "
            f"it has {', '.join(map(str, frame.columns))}"
        )
    return frame.loc[:, list(columns)].copy()
