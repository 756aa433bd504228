"""The ``cdm`` dataset: mapped site tables as a simulated federation, from study files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fedcare.analytics.spec import AnalyticsSpec
from fedcare.data.cdm.fixtures import FIXTURE_SITES, fixture_federation
from fedcare.data.cdm.loader import fixture_csv, load_cdm
from fedcare.data.cdm.sitedata import ANALYTICS_FRAMES
from fedcare.data.registry import load_dataset
from fedcare.errors import ConfigError, DataError
from fedcare.records.config_file import with_base_dir
from fedcare.records.study import StudyConfig

from .helpers import FIXTURE, write_yaml


def _sites(**sources: object) -> dict[str, dict[str, object]]:
    return {
        site: {"source": source, "mapping": f"sites/{site}.yaml"}
        for site, source in sources.items()
    }


def test_fixture_csvs_are_generated_once_and_deterministically(tmp_path: Path) -> None:
    path = fixture_csv("south", seed=3, rows=40, cache=tmp_path)
    assert path == tmp_path / "cdm-fixture" / "seed-3-rows-40" / "south.csv"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        f"{s}.csv" for s in FIXTURE_SITES
    )
    first = path.read_bytes()
    path.write_text("kept\n")  # present: not regenerated
    assert fixture_csv("south", seed=3, rows=40, cache=tmp_path).read_text() == "kept\n"
    other = fixture_csv("south", seed=3, rows=40, cache=tmp_path / "again")
    assert other.read_bytes() == first
    table = fixture_federation(np.random.default_rng(3), rows_per_site=40)["south"]
    assert first.decode().splitlines()[0] == ",".join(table.columns)
    assert len(first.decode().splitlines()) == 41
    with pytest.raises(ConfigError, match="unknown site 'nowhere'"):
        fixture_csv("nowhere", seed=0, cache=tmp_path)
    with pytest.raises(ConfigError, match="'rows' must be an int >= 1, got 0"):
        fixture_csv("south", seed=0, rows=0, cache=tmp_path)


def test_sites_read_csv_loader_specs_and_fixtures_relative_to_base_dir(tmp_path: Path) -> None:
    tables = fixture_federation(np.random.default_rng(8), rows_per_site=90)
    (tmp_path / "exports").mkdir()
    for site in ("north", "south"):
        tables[site].to_csv(tmp_path / "exports" / f"{site}.csv", index=False)
    ds = load_cdm(
        schema=str(FIXTURE / "schema.yaml"),
        sites={
            "north": {"source": "exports/north.csv", "mapping": str(FIXTURE / "sites/north.yaml")},
            "south": {
                "source": {"kind": "csv", "path": "exports/south.csv"},
                "mapping": str(FIXTURE / "sites/south.yaml"),
            },
            "east": {
                "source": {"kind": "fixture", "seed": 8, "rows": 90},
                "mapping": str(FIXTURE / "sites/east.yaml"),
            },
        },
        test_fraction=0.25,
        seed=1,
        base_dir=str(tmp_path),
    )
    assert ds.site_ids == ["north", "south", "east"] and ds.task == "binary"
    assert ds.feature_names == ("age", "sex_1", "glucose", "sbp")
    for site in ds.sites:
        assert len(site.train) + len(site.test) == 90
    frames = ds.extra[ANALYTICS_FRAMES]
    assert isinstance(frames, dict) and sorted(frames) == ["east", "north", "south"]
    assert list(frames["east"].columns)[:4] == ["age", "sex", "glucose", "sbp"]


def test_bad_options_name_the_site_and_the_problem(tmp_path: Path) -> None:
    schema = str(FIXTURE / "schema.yaml")
    mapping = str(FIXTURE / "sites" / "west.yaml")
    with pytest.raises(ConfigError, match="'sites' must map site ids"):
        load_cdm(schema, {})
    with pytest.raises(ConfigError, match=r"site 'west': needs exactly 'source' and 'mapping'"):
        load_cdm(schema, {"west": {"source": "x.csv"}})
    no_seed = {"west": {"source": {"kind": "fixture"}, "mapping": mapping}}
    with pytest.raises(ConfigError, match="site 'west': a fixture source needs 'seed'"):
        load_cdm(schema, no_seed)
    with pytest.raises(DataError, match=r"missing\.csv"):
        load_cdm(schema, {"west": {"source": "missing.csv", "mapping": mapping}}, base_dir="/")
    with pytest.raises(ConfigError, match="unknown option"):
        load_dataset("cdm", schema=schema, sites={}, folds=3)


def test_study_and_analytics_files_resolve_dataset_paths_from_their_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDCARE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "studies"
    (folder / "sites").mkdir(parents=True)
    for site in ("north", "west"):
        shutil.copy(FIXTURE / "sites" / f"{site}.yaml", folder / "sites" / f"{site}.yaml")
    shutil.copy(FIXTURE / "schema.yaml", folder / "schema.yaml")
    fixture = {"kind": "fixture", "seed": 0, "rows": 60}
    options = {"schema": "schema.yaml", "sites": _sites(north=fixture, west=fixture)}
    study_file = write_yaml(
        folder / "study.yaml",
        {
            "name": "s",
            "dataset": {"name": "cdm", "options": options},
            "model": {"kind": "logistic"},
        },
    )
    study = StudyConfig.from_yaml(study_file)
    assert study.dataset.options["base_dir"] == str(folder.resolve())
    assert study.with_overrides(rounds=2).dataset.options["base_dir"] == str(folder.resolve())
    monkeypatch.chdir(tmp_path)  # not the study's folder
    ds = load_dataset(study.dataset.name, **study.dataset.options)
    assert ds.site_ids == ["north", "west"]
    spec_file = write_yaml(
        folder / "q.yaml",
        {"dataset": "cdm", "dataset_options": options, "queries": [{"type": "count"}]},
    )
    spec = AnalyticsSpec.from_yaml(spec_file)
    assert spec.dataset_options["base_dir"] == str(folder.resolve())
    # built-in datasets read no files by path: their options stay as written
    assert with_base_dir("heart-disease", {"protocol": "raw"}, folder) == {"protocol": "raw"}
    assert with_base_dir("cdm", {"base_dir": "/x"}, folder) == {"base_dir": "/x"}
