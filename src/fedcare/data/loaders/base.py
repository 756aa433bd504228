"""What a site's table source is: one validated spec per kind, chosen by ``kind``.

A source spec is the ``source:`` mapping of a site's data mapping file, for example
``{"kind": "csv", "path": "cleveland.csv", "na_values": ["?"]}``. :func:`parse_source` turns
such a mapping into one of the frozen pydantic models below (a discriminated union on
``kind``) and raises :class:`~fedcare.errors.ConfigError` naming the bad field and value.
Relative paths are resolved later, by the loader, against the mapping file's folder.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedcare.errors import ConfigError

__all__ = [
    "IDENTIFYING_DICOM_TAGS",
    "UNREADABLE_ATTR",
    "UNREADABLE_FILE",
    "UNREADABLE_LINE",
    "CsvSource",
    "DicomSource",
    "FhirSource",
    "ParquetSource",
    "SourceSpec",
    "SqlSource",
    "is_identifying_dicom_tag",
    "parse_source",
    "resolve_path",
]

#: ``frame.attrs`` key where a loader counts the records it could not read, by reason (a
#: study may skip them: :mod:`fedcare.data.cdm.invalid_rows`).
UNREADABLE_ATTR = "unreadable_rows"
UNREADABLE_LINE = "unreadable line (wrong number of fields)"
UNREADABLE_FILE = "unreadable file"

# DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile: the commonly present
# attributes it removes or replaces. We keep patient characteristics (sex, age, size, weight),
# as the profile's "Retain Patient Characteristics Option" allows. Besides this list, every
# keyword ending in "UID" (except SOP class and transfer syntax UIDs), "Date", "Time" or
# "DateTime", and every person name (VR PN, checked when pydicom is loaded) is identifying.
IDENTIFYING_DICOM_TAGS: frozenset[str] = frozenset(
    {
        "AccessionNumber",
        "AdmissionID",
        "AdmittingDiagnosesDescription",
        "BranchOfService",
        "ContentCreatorName",
        "CountryOfResidence",
        "CurrentPatientLocation",
        "DeviceSerialNumber",
        "EthnicGroup",
        "FillerOrderNumberImagingServiceRequest",
        "ImageComments",
        "InstitutionAddress",
        "InstitutionName",
        "InstitutionalDepartmentName",
        "IssuerOfPatientID",
        "MedicalRecordLocator",
        "MilitaryRank",
        "NameOfPhysiciansReadingStudy",
        "OperatorsName",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientAddress",
        "PatientBirthDate",
        "PatientBirthName",
        "PatientBirthTime",
        "PatientComments",
        "PatientID",
        "PatientInsurancePlanCodeSequence",
        "PatientMotherBirthName",
        "PatientName",
        "PatientReligiousPreference",
        "PatientTelephoneNumbers",
        "PerformedProcedureStepID",
        "PerformingPhysicianName",
        "PersonAddress",
        "PersonTelephoneNumbers",
        "PhysiciansOfRecord",
        "PlacerOrderNumberImagingServiceRequest",
        "ReferringPhysicianAddress",
        "ReferringPhysicianName",
        "ReferringPhysicianTelephoneNumbers",
        "RegionOfResidence",
        "RequestAttributesSequence",
        "RequestingPhysician",
        "ScheduledProcedureStepID",
        "StationName",
        "StudyID",
    }
)
_NOT_IDENTIFYING_UIDS = frozenset(
    {"SOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID", "ReferencedSOPClassUID"}
)
_IDENTIFYING_SUFFIXES = ("UID", "Date", "Time", "DateTime")


def is_identifying_dicom_tag(keyword: str) -> bool:
    """True if ``keyword`` names an attribute we never return (see the module notes)."""
    if keyword in IDENTIFYING_DICOM_TAGS:
        return True
    if keyword in _NOT_IDENTIFYING_UIDS:
        return False
    return keyword.endswith(_IDENTIFYING_SUFFIXES)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvSource(_Spec):
    """A delimited text file (``.gz``/``.zip`` too) read with pandas.

    ``text: true`` keeps every value as a string and turns only ``na_values`` into missing
    (pandas' own list of NA strings is off), so a data check sees codes like ``?`` as written.
    """

    kind: Literal["csv"]
    path: str = Field(min_length=1)
    sep: str = Field(default=",", min_length=1)
    encoding: str = "utf-8"
    na_values: tuple[str, ...] = ()
    columns: tuple[str, ...] | None = None
    header: bool = True
    text: bool = False


class ParquetSource(_Spec):
    """A Parquet file (or a folder of Parquet files) read with pyarrow."""

    kind: Literal["parquet"]
    path: str = Field(min_length=1)
    columns: tuple[str, ...] | None = None


class SqlSource(_Spec):
    """A query or a whole table from a database URL (SQLAlchemy), read only.

    ``params`` are bound parameters (``:name`` in the query); values are never formatted into
    the SQL text. A relative SQLite path resolves against the mapping file's folder.
    """

    kind: Literal["sql"]
    url: str = Field(min_length=1)
    query: str | None = None
    table: str | None = None
    db_schema: str | None = Field(default=None, alias="schema")
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    columns: tuple[str, ...] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_of_query_or_table(self) -> SqlSource:
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of 'query' or 'table'")
        if self.table is not None and self.params:
            raise ValueError("'params' only apply to a 'query'")
        return self


class DicomSource(_Spec):
    """A DICOM file or a folder of them (searched recursively): one row per file.

    ``tags`` are attribute keywords (``PatientSex``, ``Rows``); identifying ones are refused.
    With ``pixels`` the image goes to a ``pixels`` column of float32 arrays, resized to
    ``size`` (rows, columns) when given. ``on_error="skip"`` lists unreadable files in
    ``df.attrs["skipped"]`` instead of raising.
    """

    kind: Literal["dicom"]
    path: str = Field(min_length=1)
    tags: tuple[str, ...] = ()
    pixels: bool = False
    size: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = None
    on_error: Literal["raise", "skip"] = "raise"

    @field_validator("tags")
    @classmethod
    def _no_identifying_tags(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in tags if is_identifying_dicom_tag(t)]
        if bad:
            raise ValueError(
                f"identifying DICOM attributes are never returned: {', '.join(bad)} "
                "(DICOM PS3.15 Basic Profile)"
            )
        dupes = sorted({t for t in tags if tags.count(t) > 1})
        if dupes:
            raise ValueError(f"duplicate tags: {', '.join(dupes)}")
        return tags


_CODE = re.compile(r"^([^|\s]+\|)?[^|\s]+$")


class FhirSource(_Spec):
    """FHIR R4 JSON bundles (a file or a folder of ``*.json``): one row per Patient.

    ``observations`` maps an output column to a code (``"2339-0"`` or
    ``"http://loinc.org|2339-0"``): the latest value per patient, plus a ``<column>_unit``
    column. ``conditions`` maps a column to a code (SNOMED CT, ICD-10, ...): 1 if the patient
    has a matching Condition that is not refuted or entered in error, else 0. Age is in whole
    years at ``reference_date`` (default: today, UTC). The ``key`` column is
    HMAC-SHA256(salt, Patient.id), truncated, where the salt is the value of the environment
    variable named by ``salt_env`` (keeps the site secret out of the file) or else ``salt``.
    """

    kind: Literal["fhir"]
    path: str = Field(min_length=1)
    observations: dict[str, str] = Field(default_factory=dict)
    conditions: dict[str, str] = Field(default_factory=dict)
    reference_date: datetime.date | None = None
    salt: str = ""
    salt_env: str | None = Field(default=None, min_length=1)

    @field_validator("observations", "conditions")
    @classmethod
    def _codes(cls, codes: dict[str, str]) -> dict[str, str]:
        reserved = {"key", "gender", "age"}
        for column, code in codes.items():
            if not column or column in reserved or column.endswith("_unit"):
                raise ValueError(f"column name {column!r} is empty, reserved or ends in _unit")
            if not _CODE.match(code):
                raise ValueError(f"code {code!r} for {column!r} is not 'code' or 'system|code'")
        return codes

    @model_validator(mode="after")
    def _distinct_columns(self) -> FhirSource:
        both = sorted(set(self.observations) & set(self.conditions))
        if both:
            raise ValueError(f"columns in both observations and conditions: {', '.join(both)}")
        return self


SourceSpec = Annotated[
    CsvSource | ParquetSource | SqlSource | DicomSource | FhirSource,
    Field(discriminator="kind"),
]
_ADAPTER: pydantic.TypeAdapter[SourceSpec] = pydantic.TypeAdapter(SourceSpec)
KINDS = ("csv", "parquet", "sql", "dicom", "fhir")


def parse_source(source: Mapping[str, Any] | SourceSpec) -> SourceSpec:
    """Validate a source mapping into its spec; a spec passes through unchanged.

    Raises
    ------
    ConfigError
        Naming the field (``source.sep``), the problem and the bad value.
    """
    if isinstance(source, CsvSource | ParquetSource | SqlSource | DicomSource | FhirSource):
        return source
    if not isinstance(source, Mapping):
        raise ConfigError(f"source must be a mapping with a 'kind', got {type(source).__name__}")
    kind = source.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"source.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    try:
        return _ADAPTER.validate_python(dict(source))
    except pydantic.ValidationError as err:
        raise ConfigError(_describe(err, str(kind))) from None


def _describe(err: pydantic.ValidationError, kind: str) -> str:
    problems = []
    for item in err.errors():
        loc = [str(p) for p in item["loc"] if p != kind]
        field = ".".join(["source", *loc])
        value = item.get("input")
        shown = "" if isinstance(value, Mapping) else f" (got {value!r})"
        problems.append(f"{field}: {item['msg']}{shown}")
    return f"invalid {kind} source: " + "; ".join(problems)


def resolve_path(path: str, base_dir: Path | None) -> Path:
    """``path`` with ``~`` expanded, joined to ``base_dir`` when relative."""
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and base_dir is not None:
        resolved = Path(base_dir) / resolved
    return resolved
