"""Loaders: read a site's local table from CSV, Parquet, SQL, DICOM or FHIR into pandas.

One entry point, :func:`load_table`, takes a source spec (a mapping from a site's YAML file,
or a :data:`SourceSpec`) and returns a :class:`pandas.DataFrame`. Each kind lives in its own
module; optional dependencies (pydicom, fhir.resources) are imported only when used.

Errors: an invalid spec raises :class:`~fedcare.errors.ConfigError` naming the field; a
missing, unreadable or malformed source raises :class:`~fedcare.errors.DataError` naming the
file (and entry) or the database URL without its password.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fedcare.data.loaders.base import (
    IDENTIFYING_DICOM_TAGS,
    CsvSource,
    DicomSource,
    FhirSource,
    ParquetSource,
    SourceSpec,
    SqlSource,
    is_identifying_dicom_tag,
    parse_source,
)

__all__ = [
    "IDENTIFYING_DICOM_TAGS",
    "CsvSource",
    "DicomSource",
    "FhirSource",
    "ParquetSource",
    "SourceSpec",
    "SqlSource",
    "is_identifying_dicom_tag",
    "load_table",
    "parse_source",
]


def load_table(
    source: Mapping[str, Any] | SourceSpec,
    *,
    base_dir: Path | None = None,
    count_unreadable: bool = False,
) -> pd.DataFrame:
    """Read the table a source spec describes.

    Parameters
    ----------
    source:
        A mapping with a ``kind`` (``csv``, ``parquet``, ``sql``, ``dicom``, ``fhir``) and that
        kind's options, or an already validated spec.
    base_dir:
        Folder that relative paths (and relative SQLite files) resolve against: usually the
        folder of the YAML file the spec came from. ``None``: the working directory.
    count_unreadable:
        A CSV line with more fields than the header is left out and counted in
        ``df.attrs["unreadable_rows"]`` instead of failing the read (a data check then fails
        on it unless the study skips invalid rows; :mod:`fedcare.data.cdm.invalid_rows`).

    Returns
    -------
    pandas.DataFrame
        A new frame; the DICOM and FHIR kinds also put notes in ``df.attrs``.

    Raises
    ------
    ConfigError
        The spec is invalid (names the field and value) or needs a missing optional package.
    DataError
        The source cannot be found or read, or its content is malformed.
    """
    spec = parse_source(source)
    if isinstance(spec, CsvSource):
        from fedcare.data.loaders.csv import load_csv

        return load_csv(spec, base_dir, count_unreadable=count_unreadable)
    if isinstance(spec, ParquetSource):
        from fedcare.data.loaders.parquet import load_parquet

        return load_parquet(spec, base_dir)
    if isinstance(spec, SqlSource):
        from fedcare.data.loaders.sql import load_sql

        return load_sql(spec, base_dir)
    if isinstance(spec, DicomSource):
        from fedcare.data.loaders.dicom import load_dicom

        return load_dicom(spec, base_dir)
    from fedcare.data.loaders.fhir import load_fhir

    return load_fhir(spec, base_dir)
