"""Parquet loader: files, folders, column subsets and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcare.data.loaders import load_table
from fedcare.errors import DataError


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {"age": rng.integers(30, 80, 20), "chol": rng.normal(220, 30, 20), "site": ["a"] * 20}
    )


def test_round_trip_with_columns(tmp_path: Path, table: pd.DataFrame) -> None:
    table.to_parquet(tmp_path / "t.parquet")
    df = load_table({"kind": "parquet", "path": "t.parquet"}, base_dir=tmp_path)
    pd.testing.assert_frame_equal(df, table)
    sub = load_table(
        {"kind": "parquet", "path": "t.parquet", "columns": ["chol", "age"]}, base_dir=tmp_path
    )
    assert list(sub.columns) == ["chol", "age"]
    assert sub["chol"].mean() == pytest.approx(table["chol"].mean())


def test_folder_of_files(tmp_path: Path, table: pd.DataFrame) -> None:
    (tmp_path / "parts").mkdir()
    table.iloc[:8].to_parquet(tmp_path / "parts" / "a.parquet")
    table.iloc[8:].to_parquet(tmp_path / "parts" / "b.parquet")
    df = load_table({"kind": "parquet", "path": "parts"}, base_dir=tmp_path)
    assert len(df) == 20
    assert df["age"].sum() == table["age"].sum()


def test_missing_column_and_file(tmp_path: Path, table: pd.DataFrame) -> None:
    table.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet has no column\(s\) 'bmi'"):
        load_table({"kind": "parquet", "path": "t.parquet", "columns": ["bmi"]}, base_dir=tmp_path)
    with pytest.raises(DataError, match=f"Parquet source {tmp_path / 'x.parquet'} does not exist"):
        load_table({"kind": "parquet", "path": "x.parquet"}, base_dir=tmp_path)


def test_not_parquet_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "fake.parquet").write_text("age,chol\n1,2\n")
    with pytest.raises(DataError, match=r"cannot read Parquet source .*fake\.parquet"):
        load_table({"kind": "parquet", "path": "fake.parquet"}, base_dir=tmp_path)
