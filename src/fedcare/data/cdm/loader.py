"""Mapped site tables as a simulated federation: the ``cdm`` entry of the dataset registry.

```yaml
dataset:
  name: cdm
  options:
    schema: cdm/fixture/schema.yaml            # relative paths: from the study file's folder
    sites:
      north: {source: exports/north.csv, mapping: cdm/fixture/sites/north.yaml}
      south: {source: {kind: csv, path: exports/south.csv}, mapping: cdm/fixture/sites/south.yaml}
      east:  {source: {kind: fixture, seed: 0}, mapping: cdm/fixture/sites/east.yaml}
    test_fraction: 0.3
    seed: 0
```
A site's ``source`` is a CSV/Parquet path, a loader spec (:mod:`fedcare.data.loaders`), or
``{kind: fixture, seed: N, rows: 300, site: NAME}``: that site's table of the seeded fixture
federation (:mod:`fedcare.data.cdm.fixtures`), written once as CSV files into the cache
(``$FEDCARE_CACHE/cdm-fixture/seed-N-rows-R/``) and read back from there like any export, so
an example runs with no extra step. ``site`` defaults to the site's key.
:meth:`fedcare.records.study.StudyConfig.from_yaml` (and the analytics spec's ``from_yaml``)
set ``base_dir`` to the file's folder. Sites are checked and refused as a site agent would
(:func:`fedcare.data.cdm.build_federation`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fedcare.data.base import FederatedDataset
from fedcare.data.cdm.fixtures import FIXTURE_SITES, fixture_federation
from fedcare.data.cdm.io import read_source, read_table
from fedcare.data.cdm.mapping import SiteMapping
from fedcare.data.cdm.schema import Schema
from fedcare.data.cdm.sitedata import build_federation
from fedcare.errors import ConfigError

__all__ = ["fixture_csv", "load_cdm"]

_SITE_KEYS = {"source", "mapping"}
_FIXTURE_KEYS = {"kind", "seed", "rows", "site"}


def fixture_csv(site: str, *, seed: int, rows: int = 300, cache: Path | None = None) -> Path:
    """The fixture federation's CSV file of ``site`` (written with all sites when missing).

    Raises
    ------
    ConfigError
        If ``site`` is not a fixture site or ``rows`` < 1.
    """
    if site not in FIXTURE_SITES:
        raise ConfigError(f"fixture source: unknown site {site!r}; sites: {list(FIXTURE_SITES)}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ConfigError(f"fixture source: 'rows' must be an int >= 1, got {rows!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"fixture source: 'seed' must be an int, got {seed!r}")
    if cache is None:
        from fedcare.data.source import cache_root

        cache = cache_root()
    folder = cache / "cdm-fixture" / f"seed-{seed}-rows-{rows}"
    path = folder / f"{site}.csv"
    if not path.is_file():
        import numpy as np

        folder.mkdir(parents=True, exist_ok=True)
        tables = fixture_federation(np.random.default_rng(seed), rows_per_site=rows)
        for name, table in tables.items():  # atomic: a concurrent reader sees whole files
            tmp = folder / f".{name}.{os.getpid()}.csv"
            table.to_csv(tmp, index=False)
            tmp.replace(folder / f"{name}.csv")
    return path


def _path(base: Path, value: object, what: str) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ConfigError(f"{what}: expected a file path, got {value!r}")
    path = Path(value)
    return path if path.is_absolute() else base / path


def _site_table(site: str, spec: Mapping[str, Any], base: Path) -> tuple[pd.DataFrame, SiteMapping]:
    what = f"dataset 'cdm' site {site!r}"
    if set(spec) != _SITE_KEYS:
        raise ConfigError(f"{what}: needs exactly 'source' and 'mapping', got keys {sorted(spec)}")
    mapping = SiteMapping.from_yaml(str(_path(base, spec["mapping"], f"{what} mapping")))
    source = spec["source"]
    if isinstance(source, Mapping) and source.get("kind") == "fixture":
        bad = sorted(set(source) - _FIXTURE_KEYS)
        if bad:
            raise ConfigError(f"{what}: unknown fixture source keys {bad}; known: {_FIXTURE_KEYS}")
        if "seed" not in source:
            raise ConfigError(f"{what}: a fixture source needs 'seed' (no default seed)")
        csv = fixture_csv(
            str(source.get("site", site)), seed=source["seed"], rows=source.get("rows", 300)
        )
        return read_table(csv, mapping), mapping
    if isinstance(source, Mapping):
        return read_source(source, mapping, base_dir=base), mapping
    return read_table(_path(base, source, f"{what} source"), mapping), mapping


def load_cdm(
    schema: str,
    sites: Mapping[str, Mapping[str, Any]],
    test_fraction: float = 0.3,
    seed: int = 0,
    base_dir: str | None = None,
    skip_invalid_rows: float | None = None,
) -> FederatedDataset:
    """Each site's table, harmonized with its mapping to ``schema`` and checked.

    Parameters
    ----------
    schema:
        The schema file.
    sites:
        Site id -> ``{"source": ..., "mapping": FILE}`` (see the module docstring).
    test_fraction, seed:
        Each site's stratified train/test split.
    base_dir:
        Folder that relative paths resolve against (default: the working directory).
    skip_invalid_rows:
        The study's ``dataset.skip_invalid_rows.max_fraction`` (set by the simulation from the
        study, not by the study's options): each site leaves out its invalid rows, counted
        (:func:`fedcare.data.cdm.build_federation`).

    Raises
    ------
    ConfigError
        If an option, the schema or a mapping is invalid (names the site and the file).
    DataError
        If a table cannot be read, or every site fails its data check.
    """
    base = Path(base_dir) if base_dir else Path.cwd()
    if not isinstance(sites, Mapping) or not sites:
        raise ConfigError(f"dataset 'cdm': 'sites' must map site ids to sources, got {sites!r}")
    cdm = Schema.from_yaml(str(_path(base, schema, "dataset 'cdm' schema")))
    tables = {}
    for site, spec in sites.items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"dataset 'cdm' site {site!r}: expected a mapping, got {spec!r}")
        tables[str(site)] = _site_table(str(site), spec, base)
    return build_federation(
        cdm, tables, test_fraction=test_fraction, seed=seed, skip_invalid=skip_invalid_rows
    )
