"""Site datasets from a mapped local table: checked on load, refused when the check fails."""

import re
from pathlib import Path

import numpy as np
import pytest

from fedcare.data.cdm.fixtures import fixture_federation
from fedcare.errors import ConfigError, DataError
from fedcare.records.messages import Task
from fedcare.site.config import DATA_CHECK_FAILED, DatasetEntry, SiteDataConfig, refusal
from fedcare.site.worker import TaskWorker

CDM = Path(__file__).resolve().parents[2] / "examples" / "cdm" / "fixture"


def _site_file(tmp_path: Path, *, broken: bool = False) -> Path:
    table = fixture_federation(np.random.default_rng(4), rows_per_site=120)["south"]
    if broken:
        table.loc[:60, "glucose"] = "?"  # half the rows: over the schema's max_missing 30%
    (tmp_path / "exports").mkdir()
    table.to_csv(tmp_path / "exports" / "south.csv", index=False)
    (tmp_path / "data.yaml").write_text(
        f"""
datasets:
  fixture:
    source: exports/south.csv
    schema: {CDM / "schema.yaml"}
    mapping: {CDM / "sites" / "south.yaml"}
    test_fraction: 0.25
    seed: 3
  fixture-spec:
    source: {{kind: csv, path: exports/south.csv}}
    schema: {CDM / "schema.yaml"}
    mapping: {CDM / "sites" / "south.yaml"}
""",
        encoding="utf-8",
    )
    return tmp_path / "data.yaml"


def test_a_mapped_source_loads_as_site_data_and_describes_only_counts(tmp_path: Path) -> None:
    config = SiteDataConfig.from_yaml(_site_file(tmp_path))
    data = config.datasets["fixture"].load()
    assert data.train.X.shape[1] == 4 and len(data.train) + len(data.test) == 120
    assert len(data.test) == pytest.approx(30, abs=1)
    spec = config.datasets["fixture-spec"].load()  # through the loader spec, relative path
    assert len(spec.train) + len(spec.test) == 120
    described = config.describe()["fixture"]
    assert described["input_shape"] == [4] and described["num_test"] == len(data.test)
    shared = described["data_check"]
    assert shared["passed"] and shared["variables"]["sex"]["unmapped"] == "<5"
    assert "U" not in str(shared["variables"]["sex"])  # counts, never raw values
    # the config crosses the worker boundary as JSON
    again = SiteDataConfig.model_validate_json(config.model_dump_json())
    assert again.datasets["fixture"].schema_file == config.datasets["fixture"].schema_file


def test_a_failed_check_refuses_tasks_with_the_reports_reason(tmp_path: Path) -> None:
    config = SiteDataConfig.from_yaml(_site_file(tmp_path, broken=True))
    entry = config.datasets["fixture"]
    data, report = entry.checked()
    assert data is None and report is not None and not report.passed
    reason = "required variable 'glucose': more than 30% missing"
    assert reason in report.summary
    with pytest.raises(DataError, match=reason):
        entry.load()
    described = config.describe()["fixture"]
    assert "input_shape" not in described and described["data_check"]["passed"] is False
    task = Task(study_id="s", round=1, site_id="south", kind="fit", plan={"dataset": "fixture"})
    reply = refusal(report.summary)(task)
    assert reply.error is not None and reply.error.kind == DATA_CHECK_FAILED
    assert reason in reply.error.message


@pytest.mark.slow
def test_the_worker_refuses_tasks_on_a_dataset_that_failed_its_check(tmp_path: Path) -> None:
    config = SiteDataConfig.from_yaml(_site_file(tmp_path, broken=True))
    worker = TaskWorker("south", config, tmp_path / "state", time_limit=60)
    try:
        task = Task(study_id="s", round=1, site_id="south", kind="fit", plan={"dataset": "fixture"})
        reply = worker.run(task)
    finally:
        worker.stop()
    assert reply.error is not None and reply.error.kind == DATA_CHECK_FAILED, reply
    assert "'glucose': more than 30% missing" in reply.error.message


def test_entries_need_exactly_one_kind_and_the_files_a_source_needs(tmp_path: Path) -> None:
    assert DatasetEntry(builtin="heart-disease", site="va").source is None
    with pytest.raises(ValueError, match="exactly one of 'builtin' or 'source'"):
        DatasetEntry(builtin="heart-disease", site="va", source="x.csv")
    with pytest.raises(ValueError, match="needs 'schema' and 'mapping'"):
        DatasetEntry(source="x.csv", mapping="m.yaml")
    with pytest.raises(ValueError, match="needs 'site'"):
        DatasetEntry(builtin="heart-disease")
    bad = tmp_path / "data.yaml"
    bad.write_text("datasets:\n  x: {source: a.csv, schema: s.yaml}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{bad}: field datasets.x: Value error, a 'source'"):
        SiteDataConfig.from_yaml(bad)


def test_the_memory_budget_is_read_from_the_site_data_file_and_must_be_positive(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.yaml"
    datasets = "datasets:\n  heart: {builtin: heart-disease, site: va}\n"
    path.write_text(datasets, encoding="utf-8")
    assert SiteDataConfig.from_yaml(path).memory_budget_mb is None  # no budget by default
    path.write_text(datasets + "memory_budget_mb: 8000\n", encoding="utf-8")
    assert SiteDataConfig.from_yaml(path).memory_budget_mb == 8000.0
    for bad, why in (
        ("-5", "Input should be greater than 0 (got -5)"),
        ("0", "Input should be greater than 0 (got 0)"),
        ("lots", "Input should be a valid number, unable to parse string as a number"),
        (".nan", "Input should be a finite number"),
    ):
        path.write_text(datasets + f"memory_budget_mb: {bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=re.escape(f"{path}: field memory_budget_mb: {why}")):
            SiteDataConfig.from_yaml(path)
