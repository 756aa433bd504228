"""Unreadable records and invalid rows of a site's table: counted, never silently dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcare.data.cdm import Schema, SiteMapping, check_table, read_table
from fedcare.data.cdm.harmonize import Problem
from fedcare.data.cdm.invalid_rows import (
    UNREADABLE_FILE,
    UNREADABLE_LINE,
    invalid_row_reasons,
    without_invalid_rows,
)
from fedcare.data.cdm.io import read_source
from fedcare.data.loaders import load_table
from fedcare.errors import DataError
from fedcare.records.invalid_rows import InvalidRows
from fedcare.site.config import _read_source

CDM = Path(__file__).resolve().parents[3] / "examples" / "cdm" / "fixture"
CSV = "age,sex,glucose,sbp,outcome\n" + "".join(
    f"{50 + i % 30},{'MF'[i % 2]},{90 + i},{120 + i % 20},{i % 2}\n" for i in range(60)
)


def _with_bad_lines(tmp_path: Path, lines: tuple[int, ...]) -> Path:
    rows = CSV.splitlines()
    for i in lines:
        rows[i + 1] += ",extra"
    path = tmp_path / "south.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_unreadable_lines_are_counted_and_fail_the_data_check(tmp_path: Path) -> None:
    path = _with_bad_lines(tmp_path, (4, 17))
    schema = Schema.from_yaml(CDM / "schema.yaml")
    mapping = SiteMapping.from_yaml(CDM / "sites" / "south.yaml")
    for table in (
        read_table(path, mapping),
        read_source({"kind": "csv", "path": str(path), "text": True}, mapping),
    ):
        assert len(table) == 58 and table.attrs["unreadable_rows"] == {UNREADABLE_LINE: 2}
        report = check_table(table, schema, mapping).report
        assert not report.passed
        assert report.failures[0] == f"2 of 60 rows could not be read ({UNREADABLE_LINE}: 2)"
        kept, invalid = without_invalid_rows(table, check_table(table, schema, mapping).problems)
        assert invalid == InvalidRows(60, {UNREADABLE_LINE: 2}, skipped=True)
        assert check_table(kept, schema, mapping).report.passed


def test_the_public_loader_still_fails_on_a_bad_line(tmp_path: Path) -> None:
    path = _with_bad_lines(tmp_path, (4,))
    with pytest.raises(DataError, match="cannot read CSV source"):
        load_table({"kind": "csv", "path": str(path)})
    counted = load_table({"kind": "csv", "path": str(path)}, count_unreadable=True)
    assert len(counted) == 59 and counted.attrs["unreadable_rows"] == {UNREADABLE_LINE: 1}
    (tmp_path / "ok.csv").write_text(CSV, encoding="utf-8")
    clean = load_table({"kind": "csv", "path": str(tmp_path / "ok.csv")}, count_unreadable=True)
    assert len(clean) == 60 and "unreadable_rows" not in clean.attrs


def test_a_row_counts_once_under_its_first_bad_variable() -> None:
    problems = [
        Problem(3, "glucose", "out-of-range", "999"),
        Problem(3, "age", "type-error", "x"),
        Problem(8, "sex", "unmapped-code", "U"),
    ]
    assert invalid_row_reasons(problems) == {
        3: "unparseable value in 'age'",
        8: "unmapped code in 'sex'",
    }
    raw = pd.DataFrame({"v": np.arange(10)})
    kept, invalid = without_invalid_rows(raw, problems)
    assert kept["v"].tolist() == [0, 1, 2, 4, 5, 6, 7, 9]
    assert invalid.count == 2 and invalid.rows == 10 and invalid.fraction == pytest.approx(0.2)


def test_the_counts_read_back_and_refuse_anything_else() -> None:
    invalid = InvalidRows.of(100, {"a": 2}, {"a": 1, "b": 3}, skipped=True)
    assert invalid.reasons == {"a": 3, "b": 3} and invalid.count == 6
    assert InvalidRows.from_info(invalid.to_info()) == invalid
    assert invalid.sentence("north") == "north skipped 6 of 100 rows (a: 3, b: 3)"
    with pytest.raises(DataError, match="not row counts"):
        InvalidRows.from_info('{"rows": 3}')


def test_a_lenient_dicom_read_skips_and_counts_unreadable_files(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from tests.data.loaders.test_dicom import write_dicom

    root = tmp_path / "scans"
    root.mkdir()
    for i in range(3):
        write_dicom(root / f"{i}.dcm", np.full((4, 4), i, dtype=np.uint16), sex="MF"[i % 2])
    (root / "broken.dcm").write_text("not an image", encoding="utf-8")
    mapping = SiteMapping(variables={"sex": {"column": "PatientSex"}})  # type: ignore[dict-item]
    source = {"kind": "dicom", "path": str(root), "tags": ["PatientSex"]}
    with pytest.raises(DataError, match=r"broken\.dcm"):  # the site's own on_error: raise
        _read_source(source, mapping)
    table = _read_source(source, mapping, lenient=True)
    assert len(table) == 3 and table.attrs["unreadable_rows"] == {UNREADABLE_FILE: 1}
