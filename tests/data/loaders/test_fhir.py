"""FHIR loader: one row per patient, latest observation with its unit, condition flags."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fhir.resources")

from fedcare.data.loaders import load_table
from fedcare.errors import ConfigError, DataError

REF = dt.date(2024, 6, 30)
SOURCE: dict[str, Any] = {
    "kind": "fhir",
    "path": "bundles",
    "observations": {"glucose": "2339-0", "chol": "http://loinc.org|2093-3"},
    "conditions": {"diabetes": "44054006", "htn": "http://hl7.org/fhir/sid/icd-10|I10"},
    "reference_date": REF.isoformat(),
    "salt": "site-secret",
}


def patient(pid: str, gender: str, birth: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth}


def observation(
    subject: str, code: str, value: float, unit: str, when: str, status: str = "final"
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org"},
    }


def condition(
    subject: str, system: str, code: str, verification: str = "confirmed"
) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "subject": {"reference": subject},
        "code": {"coding": [{"system": system, "code": code}]},
        "verificationStatus": {"coding": [{"code": verification}]},
    }


def bundle(*resources: dict[str, Any], urls: tuple[str, ...] = ()) -> dict[str, Any]:
    entries = [{"resource": r} for r in resources]
    for entry, url in zip(entries, urls, strict=False):
        entry["fullUrl"] = url
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def write(folder: Path, name: str, content: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    folder = tmp_path / "bundles"
    snomed = "http://snomed.info/sct"
    icd = "http://hl7.org/fhir/sid/icd-10"
    write(folder, "a.json", bundle(
        patient("p1", "female", "1970-07-01"),
        observation("Patient/p1", "2339-0", 5.1, "mmol/L", "2023-01-01T08:00:00Z"),
        observation("Patient/p1", "2339-0", 6.3, "mmol/L", "2024-02-01T08:00:00+01:00"),
        observation("Patient/p1", "2339-0", 9.9, "mmol/L", "2024-03-01", status="entered-in-error"),
        observation("Patient/p1", "2093-3", 210.0, "mg/dL", "2022-05-05"),
        condition("Patient/p1", snomed, "44054006"),
        condition("Patient/p1", icd, "I10", verification="refuted"),
    ))  # fmt: skip
    write(folder, "b.json", bundle(
        patient("p2", "male", "1950"),
        observation("urn:uuid:0b9c", "2339-0", 110.0, "mg/dL", "2024-01-10"),
        condition("urn:uuid:0b9c", icd, "I10"),
        observation("Patient/ghost", "2339-0", 1.0, "mmol/L", "2024-01-10"),
        {"resourceType": "Encounter", "status": "whatever-we-ignore"},
        urls=("urn:uuid:0b9c",),
    ))  # fmt: skip
    write(folder, "c.json", bundle(patient("p3", "unknown", "2024-07-01")))
    return tmp_path


def key(pid: str, salt: str = "site-secret") -> str:
    return hmac.new(salt.encode(), pid.encode(), hashlib.sha256).hexdigest()[:16]


def test_one_row_per_patient_with_units(bundles: Path) -> None:
    source = {**SOURCE, "reference_date": "2025-01-01"}
    df = load_table(source, base_dir=bundles)
    assert list(df.columns) == [
        "key", "gender", "age", "glucose", "glucose_unit", "chol", "chol_unit", "diabetes", "htn",
    ]  # fmt: skip
    assert df["key"].tolist() == [key("p1"), key("p2"), key("p3")]
    assert df["gender"].tolist() == ["female", "male", "unknown"]
    assert df["age"].tolist() == [54, 75, 0]
    assert df["glucose"].tolist()[:2] == pytest.approx([6.3, 110.0])  # latest, not the error
    assert df["glucose_unit"].tolist()[:2] == ["mmol/L", "mg/dL"]  # reported, not converted
    assert df["chol"].iloc[0] == pytest.approx(210.0)
    assert df["chol_unit"].iloc[0] == "mg/dL"
    assert df["chol"].isna().tolist() == [False, True, True]
    assert df["diabetes"].tolist() == [1, 0, 0]
    assert df["htn"].tolist() == [0, 1, 0]  # p1's hypertension was refuted
    assert df.attrs["units"]["glucose"] == ["mg/dL", "mmol/L"]
    assert df.attrs["unmatched_references"] == 1


def test_age_depends_on_the_reference_date(bundles: Path) -> None:
    ages = load_table({**SOURCE, "path": "bundles/a.json"}, base_dir=bundles)["age"]
    assert ages.tolist() == [53]  # born 1970-07-01, one day short of 54 on 2024-06-30
    later = {**SOURCE, "path": "bundles/a.json", "reference_date": "2024-07-01"}
    assert load_table(later, base_dir=bundles)["age"].tolist() == [54]


def test_birth_after_reference_date_names_the_entry(bundles: Path) -> None:
    with pytest.raises(
        DataError, match=r"c\.json, entry\[0\]: Patient.birthDate 2024-07-01 is after"
    ):
        load_table(SOURCE, base_dir=bundles)


def test_keys_are_pseudonymous_and_salted(bundles: Path) -> None:
    source = {**SOURCE, "path": "bundles/a.json"}
    first = load_table(source, base_dir=bundles)["key"].iloc[0]
    assert first == load_table(source, base_dir=bundles)["key"].iloc[0]
    other = load_table({**source, "salt": "other"}, base_dir=bundles)["key"].iloc[0]
    assert first != other
    assert "p1" not in first and len(first) == 16


def test_malformed_resource_names_file_entry_and_field(tmp_path: Path) -> None:
    bad = patient("p9", "female", "1970-13-45")
    write(tmp_path, "bad.json", bundle(patient("p8", "male", "1960-01-01"), bad))
    with pytest.raises(DataError, match=r"bad\.json, entry\[1\] \(Patient/p9\): field birthDate"):
        load_table({"kind": "fhir", "path": "bad.json"}, base_dir=tmp_path)


def test_malformed_bundles(tmp_path: Path) -> None:
    write(tmp_path / "j", "x.json", "{not json")
    with pytest.raises(DataError, match=r"x\.json is not readable JSON"):
        load_table({"kind": "fhir", "path": "j"}, base_dir=tmp_path)
    write(tmp_path / "p", "x.json", patient("p1", "male", "1960"))
    with pytest.raises(DataError, match=r"x\.json: expected resourceType 'Bundle', got 'Patient'"):
        load_table({"kind": "fhir", "path": "p"}, base_dir=tmp_path)
    write(tmp_path / "e", "x.json", {"resourceType": "Bundle", "entry": [{"resource": {}}]})
    with pytest.raises(DataError, match=r"x\.json, entry\[0\]: no resource with a resourceType"):
        load_table({"kind": "fhir", "path": "e"}, base_dir=tmp_path)
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match=r"has no \*\.json files"):
        load_table({"kind": "fhir", "path": "none"}, base_dir=tmp_path)


def test_patient_without_id(tmp_path: Path) -> None:
    write(tmp_path, "b.json", bundle({"resourceType": "Patient", "gender": "male"}))
    with pytest.raises(DataError, match=r"entry\[0\]: Patient has no id"):
        load_table({"kind": "fhir", "path": "b.json"}, base_dir=tmp_path)


def test_without_fhir_resources_the_error_says_what_to_install(
    bundles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m.startswith("fhir.resources")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fhir.resources", None)
    with pytest.raises(ConfigError, match=r"pip install 'fedcare\[fhir\]'"):
        load_table(SOURCE, base_dir=bundles)


def test_salt_from_environment(bundles: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = {**SOURCE, "path": "bundles/a.json", "salt": "", "salt_env": "SITE_SALT"}
    monkeypatch.delenv("SITE_SALT", raising=False)
    with pytest.raises(ConfigError, match=r"source\.salt_env: environment variable SITE_SALT"):
        load_table(source, base_dir=bundles)
    monkeypatch.setenv("SITE_SALT", "from-env")
    assert load_table(source, base_dir=bundles)["key"].tolist() == [key("p1", "from-env")]
