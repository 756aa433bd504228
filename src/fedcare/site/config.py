"""A site's data configuration: which local datasets studies may refer to, by name.

```yaml
datasets:
  heart-disease:                 # the name a study's ``dataset.name`` refers to
    builtin: heart-disease       # a built-in loader (see fedcare.data.registry)
    options: {protocol: raw}
    site: cleveland              # this hospital's part of it
  heart-local:                   # or: the hospital's own table, mapped to the study's schema
    source: {kind: csv, path: exports/heart.csv}   # a loader spec, or a CSV/Parquet path
    schema: cdm/heart-disease/schema.yaml
    mapping: cdm/heart-disease/sites/bern.yaml
    test_fraction: 0.3
    seed: 7
checkpoint_every_s: 60           # training checkpoints of fit tasks (default 60; 0: none)
memory_budget_mb: 8000           # optional: large torch models keep their params on disk
```
Relative paths are taken from the folder of the site data file. A mapped dataset is checked
(:func:`fedcare.data.cdm.check_table`) when it is loaded; when it fails the schema's required
checks, the site refuses every task on it with the report's summary (``data-check-failed``),
and the coordinator learns only the report's shareable counts. A study whose plan allows it
(``dataset.skip_invalid_rows``) trains on the dataset prepared with ``skip_invalid=True``: the
rows that cannot be read or hold a value failing the check are left out and counted by reason
(:mod:`fedcare.data.cdm.invalid_rows`, :mod:`fedcare.site.row_skips`).

``checkpoint_every_s`` is how often the worker saves a fit task's training progress to the
dataset's state folder, so that the same task run again after a crash or restart resumes it
(:mod:`fedcare.site.train_checkpoint`); 0 turns checkpoints off.

``memory_budget_mb`` (optional, MB of 10^6 bytes, > 0; default none) is the memory a fit task
should fit in: a torch model whose params take more than a quarter of it keeps them in a
memory-mapped scratch file in the worker's state folder (``STATE/transfers/worker``, which
must be on a disk), file-backed pages the kernel can write back and drop instead of anonymous
memory (:mod:`fedcare.models.torch_offload`). It is not a hard limit (the site policy's
``memory_limit_mb`` is): gradients, optimizer state and data stay in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedcare.data.base import SiteData
from fedcare.data.schema_check import feature_schema
from fedcare.errors import DataError
from fedcare.records.config_file import read_yaml, validate_config
from fedcare.records.messages import Reply, Task

if TYPE_CHECKING:
    import pandas as pd

    from fedcare.data.cdm import SiteMapping, SiteReport
    from fedcare.records.invalid_rows import InvalidRows

__all__ = ["DATA_CHECK_FAILED", "DatasetEntry", "PreparedDataset", "SiteDataConfig", "refusal"]

#: The error kind of a reply refusing a task because the dataset failed its data check.
DATA_CHECK_FAILED = "data-check-failed"


class DatasetEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    builtin: str | None = None
    site: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    source: dict[str, Any] | str | None = None
    schema_file: str | None = Field(default=None, alias="schema")
    mapping: str | None = None
    test_fraction: float = Field(default=0.3, gt=0, lt=1)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> DatasetEntry:
        if (self.builtin is None) == (self.source is None):
            raise ValueError("give exactly one of 'builtin' or 'source'")
        if self.builtin is not None and self.site is None:
            raise ValueError("a builtin dataset needs 'site' (this hospital's part of it)")
        if self.source is not None and (self.schema_file is None or self.mapping is None):
            raise ValueError("a 'source' dataset needs 'schema' and 'mapping' files")
        return self

    def relative_to(self, base: Path) -> DatasetEntry:
        """The entry with its relative file paths taken from ``base``."""
        if self.source is None:
            return self
        fix = {
            "schema_file": _under(base, self.schema_file),
            "mapping": _under(base, self.mapping),
            "source": _under(base, self.source) if isinstance(self.source, str) else self.source,
        }
        if isinstance(self.source, dict) and isinstance(self.source.get("path"), str):
            fix["source"] = {**self.source, "path": _under(base, self.source["path"])}
        return self.model_copy(update=fix)

    def checked(self) -> tuple[SiteData | None, SiteReport | None]:
        """The site's data, and for a mapped source its data-check report.

        The data is ``None`` when the report fails the schema's required checks.
        """
        prepared = self.prepared()
        return prepared.data, prepared.report

    def prepared(self, *, skip_invalid: bool = False) -> PreparedDataset:
        """:meth:`checked`, plus for a mapped source the harmonized table analytics reads
        (every row, the schema's variable names; see :func:`fedcare.data.cdm.analysis_frame`).

        ``skip_invalid``: rows that cannot be read (CSV lines with too many fields, unreadable
        DICOM files) or hold a value failing the data check are left out before the check, and
        counted by reason in the result's ``invalid`` (a built-in dataset has no row check:
        none is left out).
        """
        from fedcare.records.invalid_rows import InvalidRows

        if self.builtin is not None:
            from fedcare.data.registry import load_dataset

            federated = load_dataset(self.builtin, **self.options)
            data = federated.site(str(self.site))
            rows = len(data.train) + len(data.test)
            invalid = InvalidRows(rows, {}, skipped=True) if skip_invalid else None
            features = _schema(data, federated.feature_names)
            return PreparedDataset(data, None, None, features, invalid)
        from fedcare.data.cdm import (
            Schema,
            SiteMapping,
            analysis_frame,
            check_table,
            feature_names,
            feature_units,
            to_site_data,
        )

        schema = Schema.from_yaml(str(self.schema_file))
        mapping = SiteMapping.from_yaml(str(self.mapping))
        raw = _read_source(self.source, mapping, lenient=skip_invalid)
        result = check_table(raw, schema, mapping)
        invalid = None
        if skip_invalid:
            from fedcare.data.cdm.invalid_rows import without_invalid_rows

            kept, invalid = without_invalid_rows(raw, result.problems)
            result = check_table(kept, schema, mapping)
        if not result.report.passed:
            return PreparedDataset(None, result.report, None, None, invalid)
        site_id = self.site or mapping.site or "site"
        site, _ = to_site_data(
            result, schema, site_id, test_fraction=self.test_fraction, seed=self.seed
        )
        schema_out = _schema(site, feature_names(schema), feature_units(schema))
        return PreparedDataset(site, result.report, analysis_frame(result), schema_out, invalid)

    def load(self) -> SiteData:
        """The site's data; a mapped source that fails its data check raises DataError."""
        data, report = self.checked()
        if data is None:
            assert report is not None
            raise DataError(report.summary)
        return data


class PreparedDataset(NamedTuple):
    """A dataset entry, loaded: the arrays (``None`` if it failed its data check), the
    data-check report (mapped sources), the harmonized table (mapped sources that passed) and
    the feature schema (:func:`fedcare.data.schema_check.feature_schema`; ``None`` without
    data) and, prepared with ``skip_invalid``, the rows left out by reason."""

    data: SiteData | None
    report: SiteReport | None
    frame: pd.DataFrame | None
    schema: dict[str, Any] | None
    invalid: InvalidRows | None = None


def _schema(
    data: SiteData, names: Sequence[str], units: Mapping[str, str | None] | None = None
) -> dict[str, Any]:
    X = data.train.X
    return feature_schema(data.train.input_shape, str(X.dtype), names, units)


def _under(base: Path, path: str | None) -> str | None:
    return None if path is None else str(base / path)


def _read_source(
    source: dict[str, Any] | str | None, mapping: SiteMapping, *, lenient: bool = False
) -> pd.DataFrame:
    """The raw table; ``lenient``: a DICOM source skips (and counts) unreadable files."""
    from fedcare.data.cdm.io import read_source, read_table
    from fedcare.data.loaders.base import UNREADABLE_ATTR, UNREADABLE_FILE

    if not isinstance(source, dict):
        return read_table(str(source), mapping)
    dicom = lenient and source.get("kind") == "dicom"
    table = read_source({**source, "on_error": "skip"} if dicom else source, mapping)
    skipped = len(table.attrs.get("skipped") or ()) if dicom else 0
    if skipped:
        table.attrs[UNREADABLE_ATTR] = {UNREADABLE_FILE: skipped}
    return table


def refusal(reason: str) -> Callable[[Task], Reply]:
    """A handler refusing every task with ``reason`` (a failed data check's summary)."""
    return lambda task: Reply.failure(task, DATA_CHECK_FAILED, reason)


class SiteDataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    datasets: dict[str, DatasetEntry]
    #: Seconds between a fit task's training checkpoints (0: none).
    checkpoint_every_s: float = Field(default=60.0, ge=0)
    #: MB a fit task should fit in: large torch params go to a scratch file (None: no budget).
    memory_budget_mb: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SiteDataConfig:
        path = Path(path)
        data = read_yaml(path, "site data file")
        config = validate_config(cls, data, str(path))
        base = path.resolve().parent
        entries = {name: e.relative_to(base) for name, e in config.datasets.items()}
        return config.model_copy(update={"datasets": entries})

    def describe(self) -> dict[str, dict[str, Any]]:
        """What the coordinator may know about each dataset: shapes, the feature schema (column
        names in order, dtype, units; the coordinator refuses a site whose schema differs from
        the study's reference) and counts, no rows. A dataset that fails its data check but
        passes it without its invalid rows is described as prepared without them (what a study
        that skips invalid rows trains on; a study that does not gets ``data-check-failed``)."""
        out: dict[str, dict[str, Any]] = {}
        for name, entry in self.datasets.items():
            data, report, _, schema, _ = entry.prepared()
            if data is None and report is not None:
                data, _, _, schema, _ = entry.prepared(skip_invalid=True)
            described: dict[str, Any] = {}
            if data is not None:
                described = {
                    "input_shape": list(data.train.input_shape),
                    "schema": schema,
                    "task": "survival" if data.train.time is not None else "binary",
                    "num_train": len(data.train),
                    "num_test": len(data.test),
                }
            if report is not None:  # aggregate counts only, small cells suppressed
                described["data_check"] = report.shareable()
            out[name] = described
        return out
