"""Source specs: the discriminated union, field-naming errors, identifying DICOM tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcare.data.loaders import (
    CsvSource,
    DicomSource,
    FhirSource,
    SqlSource,
    is_identifying_dicom_tag,
    load_table,
    parse_source,
)
from fedcare.data.loaders.base import resolve_path
from fedcare.errors import ConfigError


def test_kind_selects_the_model_and_defaults_apply() -> None:
    spec = parse_source({"kind": "csv", "path": "a.csv", "na_values": ["?"]})
    assert isinstance(spec, CsvSource)
    assert (spec.sep, spec.na_values, spec.columns) == (",", ("?",), None)
    sql = parse_source({"kind": "sql", "url": "sqlite:///a.db", "table": "t", "schema": "s"})
    assert isinstance(sql, SqlSource)
    assert sql.db_schema == "s"
    dicom = parse_source({"kind": "dicom", "path": "d", "size": [64, 32], "pixels": True})
    assert isinstance(dicom, DicomSource)
    assert dicom.size == (64, 32)


def test_a_spec_passes_through_unchanged() -> None:
    spec = FhirSource(kind="fhir", path="b")
    assert parse_source(spec) is spec


def test_the_input_mapping_is_not_changed() -> None:
    source = {"kind": "csv", "path": "a.csv", "columns": ["x"]}
    before = {k: (list(v) if isinstance(v, list) else v) for k, v in source.items()}
    parse_source(source)
    assert source == before


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"kind": "csv"}, "source.path: Field required"),
        ({"kind": "csv", "path": "a", "seperator": ";"}, "source.seperator: Extra inputs"),
        ({"kind": "csv", "path": "a", "sep": ""}, "source.sep: String should have at least"),
        ({"kind": "parquet", "path": "a", "columns": "x"}, "source.columns: Input should be"),
        ({"kind": "sql", "url": "sqlite:///a.db"}, "exactly one of 'query' or 'table'"),
        ({"kind": "sql", "url": "u", "table": "t", "params": {"a": 1}}, "'params' only apply"),
        ({"kind": "dicom", "path": "d", "size": [0, 4]}, "source.size.0: Input should be"),
        ({"kind": "dicom", "path": "d", "tags": ["Rows", "Rows"]}, "duplicate tags: Rows"),
        ({"kind": "fhir", "path": "b", "observations": {"age": "1-8"}}, "'age' is empty, res"),
        ({"kind": "fhir", "path": "b", "conditions": {"dm": "a|b|c"}}, "code 'a|b|c' for 'dm'"),
        (
            {"kind": "fhir", "path": "b", "observations": {"x": "1"}, "conditions": {"x": "2"}},
            "both observations and conditions: x",
        ),
        ({"kind": "excel", "path": "a"}, "source.kind must be one of csv, parquet, sql"),
        ({"path": "a"}, "got None"),
    ],
)
def test_invalid_specs_name_the_field(source: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match="source") as info:
        load_table(source)
    assert expected in str(info.value)


def test_bad_value_is_shown() -> None:
    with pytest.raises(ConfigError, match=r"source\.pixels: .*\(got 'perhaps'\)"):
        parse_source({"kind": "dicom", "path": "d", "pixels": "perhaps"})


def test_non_mapping_source_is_refused() -> None:
    with pytest.raises(ConfigError, match="mapping with a 'kind', got list"):
        parse_source(["csv"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tag",
    ["PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber",
     "StudyInstanceUID", "SOPInstanceUID", "StudyDate", "AcquisitionDateTime",
     "ReferringPhysicianName", "PatientAddress"],
)  # fmt: skip
def test_identifying_dicom_tags_are_refused(tag: str) -> None:
    assert is_identifying_dicom_tag(tag)
    with pytest.raises(ConfigError, match=f"source.tags: .*never returned: {tag}"):
        parse_source({"kind": "dicom", "path": "d", "tags": ["Modality", tag]})


@pytest.mark.parametrize(
    "tag", ["PatientSex", "PatientAge", "Modality", "Rows", "Columns", "SOPClassUID"]
)
def test_characteristics_and_image_tags_are_allowed(tag: str) -> None:
    assert not is_identifying_dicom_tag(tag)


def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    assert resolve_path("x/a.csv", tmp_path) == tmp_path / "x" / "a.csv"
    assert resolve_path(str(tmp_path / "b.csv"), Path("/elsewhere")) == tmp_path / "b.csv"
    assert resolve_path("a.csv", None) == Path("a.csv")


def test_a_yaml_mapping_file_loads_relative_to_its_folder(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "site.csv").write_text("age|chol\n63|233\nNA?|250\n")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "source:\n  kind: csv\n  path: data/site.csv\n  sep: '|'\n  na_values: ['NA?']\n"
        "other:\n  kind: fhir\n  path: b\n  reference_date: 2024-06-30\n"
    )
    loaded = yaml.safe_load(mapping.read_text())
    df = load_table(loaded["source"], base_dir=mapping.parent)
    assert df["chol"].tolist() == [233, 250]
    assert df["age"].isna().tolist() == [False, True]
    fhir = parse_source(loaded["other"])
    assert isinstance(fhir, FhirSource)
    assert fhir.reference_date is not None and fhir.reference_date.isoformat() == "2024-06-30"
