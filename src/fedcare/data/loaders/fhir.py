"""FHIR R4 sources: JSON bundles of Patient, Observation and Condition → one row per patient.

Resources are validated with the ``fhir.resources`` models (its R4B package, as the
package's default is R5; R4B matches R4 in the fields of these three resources we read).
Other resource types in a bundle are ignored. Columns, in order:

- ``key``: HMAC-SHA256 of ``Patient.id`` under the salt (``salt_env`` or ``salt``), 16 hex
  digits. The same salt gives the same key across loads, so tables can be joined; without a
  secret salt a key can be recomputed from a known id.
- ``gender`` (FHIR code: female, male, other, unknown) and ``age`` (whole years at the
  reference date; a year-only birth date counts from 1 January, a year-month one from the 1st).
- per observation column: the latest value (by effective time, else issued time) and
  ``<column>_unit`` with the unit as recorded (UCUM code when no unit text). Units are
  reported, never converted; ``df.attrs["units"]`` lists the distinct units per column.
  Observations marked entered-in-error or cancelled are ignored.
- per condition column: 1 if the patient has a Condition with the code whose verification
  status is not refuted or entered-in-error, else 0. The clinical status is not looked at: a
  resolved condition still counts (history of).

References to patients not present in any bundle are counted in
``df.attrs["unmatched_references"]``. A malformed file or resource raises
:class:`~fedcare.errors.DataError` naming the file, the entry index and the field.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pydantic

from fedcare.data.loaders.base import FhirSource, resolve_path
from fedcare.errors import ConfigError, DataError

__all__ = ["load_fhir"]

_PATIENT_REF = re.compile(r"(?:^|/)Patient/([^/]+)(?:/_history/[^/]+)?$")
_IGNORED_OBSERVATION_STATUS = frozenset({"entered-in-error", "cancelled"})
_IGNORED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
_EPOCH = dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class _Patient:
    gender: str | None
    birth: str | None
    where: str
    values: dict[str, tuple[tuple[dt.datetime, int], Any, str | None]] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)


@dataclass
class _State:
    patients: dict[str, _Patient] = field(default_factory=dict)
    pending: list[tuple[str, Any, str]] = field(default_factory=list)  # (kind, resource, where)
    aliases: dict[str, str] = field(default_factory=dict)  # fullUrl -> Patient.id
    unmatched: int = 0


def load_fhir(spec: FhirSource, base_dir: Path | None) -> pd.DataFrame:
    """Read the bundles under the spec's path into one row per Patient.

    Raises
    ------
    ConfigError
        ``fhir.resources`` is not installed.
    DataError
        The path is missing or holds no ``*.json`` file, a file is not a JSON Bundle, or a
        Patient, Observation or Condition is malformed (names file, entry and field).
    """
    models = _models()
    state = _State()
    for file in _list_files(resolve_path(spec.path, base_dir)):
        _read_bundle(file, models, state)
    for order, (kind, resource, _where) in enumerate(state.pending):
        if kind == "Observation":
            _add_observation(resource, spec, state, order)
        else:
            _add_condition(resource, spec, state)
    reference = spec.reference_date or dt.datetime.now(dt.timezone.utc).date()
    return _frame(state, spec, reference)


def _models() -> dict[str, type[pydantic.BaseModel]]:
    try:
        from fhir.resources.R4B.condition import Condition
        from fhir.resources.R4B.observation import Observation
        from fhir.resources.R4B.patient import Patient
    except ImportError:
        raise ConfigError(
            "the fhir source kind needs fhir.resources: pip install 'fedcare[fhir]'"
        ) from None
    return {"Patient": Patient, "Observation": Observation, "Condition": Condition}


def _list_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"FHIR source {path} does not exist")
    files = sorted(p for p in path.rglob("*.json") if p.is_file())
    if not files:
        raise DataError(f"FHIR source {path} has no *.json files")
    return files


def _read_bundle(file: Path, models: dict[str, type[pydantic.BaseModel]], state: _State) -> None:
    try:
        bundle = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"FHIR file {file} is not readable JSON: {err}") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        got = bundle.get("resourceType") if isinstance(bundle, dict) else type(bundle).__name__
        raise DataError(f"FHIR file {file}: expected resourceType 'Bundle', got {got!r}")
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise DataError(f"FHIR file {file}: Bundle.entry must be a list")
    for index, entry in enumerate(entries):
        where = f"FHIR file {file}, entry[{index}]"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise DataError(f"{where}: no resource with a resourceType")
        kind = resource["resourceType"]
        if kind not in models:
            continue
        parsed = _validate(models[kind], resource, where)
        if kind == "Patient":
            _add_patient(parsed, entry.get("fullUrl"), where, state)
        else:
            state.pending.append((kind, parsed, where))


def _validate(model: type[pydantic.BaseModel], resource: dict[str, Any], where: str) -> Any:
    try:
        return model.model_validate(resource)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(resource)"
        name = f"{resource['resourceType']}/{resource.get('id', '?')}"
        raise DataError(f"{where} ({name}): field {loc}: {first['msg']}") from None


def _add_patient(patient: Any, full_url: Any, where: str, state: _State) -> None:
    if not patient.id:
        raise DataError(f"{where}: Patient has no id")
    if patient.id not in state.patients:  # the first bundle naming a patient wins
        birth = None if patient.birthDate is None else str(patient.birthDate)
        state.patients[patient.id] = _Patient(patient.gender, birth, where)
    if isinstance(full_url, str) and full_url:
        state.aliases[full_url] = patient.id


def _patient_of(resource: Any, state: _State) -> _Patient | None:
    ref = resource.subject.reference if resource.subject is not None else None
    if not ref:
        state.unmatched += 1
        return None
    pid = state.aliases.get(ref)
    if pid is None:
        match = _PATIENT_REF.search(ref)
        pid = match.group(1) if match else None
    patient = state.patients.get(pid) if pid is not None else None
    if patient is None:
        state.unmatched += 1
    return patient


def _codes(concept: Any) -> set[str]:
    """Every coding of a CodeableConcept as both ``code`` and ``system|code``."""
    out: set[str] = set()
    for coding in (concept.coding or []) if concept is not None else []:
        if coding.code:
            out.add(coding.code)
            if coding.system:
                out.add(f"{coding.system}|{coding.code}")
    return out


def _add_observation(obs: Any, spec: FhirSource, state: _State, order: int) -> None:
    if obs.status in _IGNORED_OBSERVATION_STATUS:
        return
    codes = _codes(obs.code)
    columns = [col for col, code in spec.observations.items() if code in codes]
    if not columns:
        return
    patient = _patient_of(obs, state)
    if patient is None:
        return
    value, unit = _value(obs)
    key = (_when(obs), order)
    for column in columns:
        if column not in patient.values or patient.values[column][0] <= key:
            patient.values[column] = (key, value, unit)


def _value(obs: Any) -> tuple[Any, str | None]:
    if obs.valueQuantity is not None:
        q = obs.valueQuantity
        value = None if q.value is None else float(q.value)
        return value, q.unit or q.code
    for name in ("valueInteger", "valueString", "valueBoolean"):
        value = getattr(obs, name, None)
        if value is not None:
            return (int(value) if isinstance(value, bool) else value), None
    if obs.valueCodeableConcept is not None:
        codes = [c.code for c in obs.valueCodeableConcept.coding or [] if c.code]
        return (codes[0] if codes else obs.valueCodeableConcept.text), None
    return None, None


def _when(obs: Any) -> dt.datetime:
    """The effective time (or issued time) as an aware datetime; the epoch when absent."""
    period = obs.effectivePeriod
    for value in (
        obs.effectiveDateTime,
        obs.effectiveInstant,
        period.end if period is not None else None,
        period.start if period is not None else None,
        obs.issued,
    ):
        if value is not None:
            return _as_datetime(value)
    return _EPOCH


def _as_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    year, month, day = _partial_date(str(value))
    return dt.datetime(year, month, day, tzinfo=dt.timezone.utc)


def _partial_date(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text[:10].split("-") if p]
    return parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1


def _add_condition(cond: Any, spec: FhirSource, state: _State) -> None:
    if _codes(cond.verificationStatus) & _IGNORED_VERIFICATION:
        return
    codes = _codes(cond.code)
    columns = [col for col, code in spec.conditions.items() if code in codes]
    if not columns:
        return
    patient = _patient_of(cond, state)
    if patient is not None:
        patient.flags.update(columns)


def _age(patient: _Patient, reference: dt.date) -> int | None:
    if patient.birth is None:
        return None
    year, month, day = _partial_date(patient.birth)
    age = reference.year - year - ((reference.month, reference.day) < (month, day))
    if age < 0:
        raise DataError(
            f"{patient.where}: Patient.birthDate {patient.birth} is after the reference date "
            f"{reference.isoformat()}"
        )
    return age


def _salt(spec: FhirSource) -> str:
    if spec.salt_env is None:
        return spec.salt
    value = os.environ.get(spec.salt_env)
    if not value:
        raise ConfigError(f"source.salt_env: environment variable {spec.salt_env} is not set")
    return value


def _frame(state: _State, spec: FhirSource, reference: dt.date) -> pd.DataFrame:
    salt = _salt(spec).encode("utf-8")
    rows = []
    for pid, patient in state.patients.items():
        row: dict[str, Any] = {
            "key": hmac.new(salt, pid.encode("utf-8"), hashlib.sha256).hexdigest()[:16],
            "gender": patient.gender,
            "age": _age(patient, reference),
        }
        for column in spec.observations:
            _, value, unit = patient.values.get(column, (None, None, None))
            row[column] = value
            row[f"{column}_unit"] = unit
        for column in spec.conditions:
            row[column] = int(column in patient.flags)
        rows.append(row)
    columns = ["key", "gender", "age"]
    for column in spec.observations:
        columns += [column, f"{column}_unit"]
    columns += list(spec.conditions)
    frame = pd.DataFrame(rows, columns=columns)
    frame["age"] = frame["age"].astype("Int64")
    for column in spec.conditions:
        frame[column] = frame[column].astype("int64")
    frame.attrs["units"] = {
        c: sorted({u for u in frame[f"{c}_unit"] if isinstance(u, str)}) for c in spec.observations
    }
    frame.attrs["unmatched_references"] = state.unmatched
    frame.attrs["reference_date"] = reference.isoformat()
    return frame
