"""CSV loader: options, relative paths, errors naming the file and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcare.data.loaders import CsvSource, load_table
from fedcare.errors import DataError


@pytest.fixture
def cleveland(tmp_path: Path) -> Path:
    (tmp_path / "cleveland.csv").write_text("age;sex;chol\n63;1;233\n41;0;?\n57;1;354\n")
    return tmp_path


def test_reads_with_separator_na_values_and_base_dir(cleveland: Path) -> None:
    source = {"kind": "csv", "path": "cleveland.csv", "sep": ";", "na_values": ["?"]}
    df = load_table(source, base_dir=cleveland)
    assert list(df.columns) == ["age", "sex", "chol"]
    assert df["age"].tolist() == [63, 41, 57]
    assert np.isnan(df.loc[1, "chol"])
    assert df["chol"].sum() == pytest.approx(233 + 354)


def test_columns_subset_in_the_asked_order(cleveland: Path) -> None:
    spec = CsvSource(
        kind="csv", path=str(cleveland / "cleveland.csv"), sep=";", columns=("chol", "age")
    )
    df = load_table(spec)
    assert list(df.columns) == ["chol", "age"]


def test_missing_column_is_named(cleveland: Path) -> None:
    source = {"kind": "csv", "path": "cleveland.csv", "sep": ";", "columns": ["age", "trestbps"]}
    with pytest.raises(DataError, match=r"cleveland\.csv has no column\(s\) 'trestbps'"):
        load_table(source, base_dir=cleveland)


def test_encoding_option(tmp_path: Path) -> None:
    (tmp_path / "l1.csv").write_bytes("ville,n\nZürich,3\n".encode("latin-1"))
    df = load_table({"kind": "csv", "path": "l1.csv", "encoding": "latin-1"}, base_dir=tmp_path)
    assert df.loc[0, "ville"] == "Zürich"
    with pytest.raises(DataError, match=r"cannot read CSV source .*l1\.csv"):
        load_table({"kind": "csv", "path": "l1.csv"}, base_dir=tmp_path)


def test_no_header_numbers_the_columns(tmp_path: Path) -> None:
    (tmp_path / "raw.csv").write_text("1,2\n3,4\n")
    df = load_table({"kind": "csv", "path": "raw.csv", "header": False}, base_dir=tmp_path)
    assert list(df.columns) == ["0", "1"]
    assert df.to_numpy().sum() == 10


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"CSV source {tmp_path / 'nope.csv'} does not exist"):
        load_table({"kind": "csv", "path": "nope.csv"}, base_dir=tmp_path)


def test_result_is_a_plain_frame(cleveland: Path) -> None:
    df = load_table({"kind": "csv", "path": str(cleveland / "cleveland.csv"), "sep": ";"})
    assert isinstance(df, pd.DataFrame)
    assert len(df) == 3


def test_real_cleveland_file_from_the_mirror(mirror: Path) -> None:
    path = mirror / "heart_disease" / "processed.cleveland.data"
    if not path.is_file():
        pytest.skip(f"{path} not in the mirror")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    df = load_table({"kind": "csv", "path": str(path), "header": False, "na_values": ["?"]})
    assert df.shape == (len(lines), 14)
    assert int(df.isna().sum().sum()) == sum(line.split(",").count("?") for line in lines)
    assert df.dtypes.map(pd.api.types.is_float_dtype).sum() >= 13  # '?' no longer makes text


def test_gzip_csv_is_read(tmp_path: Path) -> None:
    import gzip

    with gzip.open(tmp_path / "h.csv.gz", "wt") as out:
        out.write("hospitalid,beds\n1,100\n2,250\n")
    df = load_table({"kind": "csv", "path": "h.csv.gz"}, base_dir=tmp_path)
    assert df["beds"].sum() == 350


def test_text_mode_keeps_values_as_written(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("age,ca\n63,?\nNA,0.0\n")
    df = load_table({"kind": "csv", "path": "t.csv", "text": True}, base_dir=tmp_path)
    assert df.to_numpy().tolist() == [["63", "?"], ["NA", "0.0"]]
    df = load_table(
        {"kind": "csv", "path": "t.csv", "text": True, "na_values": ["?"]}, base_dir=tmp_path
    )
    assert df["ca"].isna().tolist() == [True, False]
    assert df["age"].tolist() == ["63", "NA"]
