"""The worker's site apps: the policy's analytics minimum cell, harmonized tables for analytics.

No coordinator here: :func:`build_apps` is what the worker subprocess runs at start, and one
test sends a task through a real :class:`TaskWorker` subprocess.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from fedcare.analytics.disclosure import SUPPRESSED
from fedcare.data.cdm import Schema, SiteMapping, analysis_frame, check_table
from fedcare.data.cdm.fixtures import fixture_federation
from fedcare.models.registry import build_model
from fedcare.models.torch_offload import SCRATCH_PREFIX, ParamOffload
from fedcare.records.messages import Reply, Task
from fedcare.site import worker_io
from fedcare.site.agent import SiteAgent
from fedcare.site.approvals import ApprovalStore
from fedcare.site.config import SiteDataConfig
from fedcare.site.governance import SiteGovernance
from fedcare.site.policy import SitePolicy
from fedcare.site.worker import TaskWorker, build_apps
from fedcare.transport.provisioning import create_federation
from tests.conftest import require_mirror

CDM = Path(__file__).resolve().parents[2] / "examples" / "cdm" / "fixture"
#: Fine bins: some hold 1 to 4 of the site's 150 patients.
EDGES = [float(e) for e in np.arange(2.0, 14.5, 0.5)]


def _data(tmp_path: Path) -> tuple[SiteDataConfig, pd.DataFrame]:
    """A site data file serving the fixture's south table (mapped), and its harmonized table."""
    table = fixture_federation(np.random.default_rng(5), rows_per_site=150)["south"]
    table.to_csv(tmp_path / "south.csv", index=False)
    entry = {"source": "south.csv", "schema": str(CDM / "schema.yaml")}
    entry["mapping"] = str(CDM / "sites" / "south.yaml")
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"fixture": entry}}), encoding="utf-8")
    schema, mapping = Schema.from_yaml(CDM / "schema.yaml"), SiteMapping.from_yaml(entry["mapping"])
    return SiteDataConfig.from_yaml(path), analysis_frame(check_table(table, schema, mapping))


def _task(*queries: dict[str, Any]) -> Task:
    spec = {"name": "q", "dataset": "fixture", "queries": list(queries)}
    plan = {"analytics": spec, "columns": ["x0", "x1", "x2", "x3"], "dataset": "fixture"}
    return Task(study_id="s", round=1, site_id="south", kind="analytics", plan=plan)


HIST = {"type": "histogram", "variable": "glucose", "edges": EDGES}


def _hist(reply: Reply) -> tuple[np.ndarray, np.ndarray]:
    assert reply.error is None, reply.error
    return reply.arrays["q0/count"], reply.arrays[f"q0/count{SUPPRESSED}"]


def test_the_policy_min_cell_decides_what_the_worker_withholds(tmp_path: Path) -> None:
    config, frame = _data(tmp_path)
    glucose = pd.to_numeric(frame["glucose"]).dropna().to_numpy(dtype=float)
    truth, _ = np.histogram(glucose, bins=EDGES)
    assert np.any((truth > 0) & (truth < 5)), "the bins must hold small cells"
    for min_cell in (1, 5, 12):
        app = build_apps("south", config, tmp_path / "state", min_cell=min_cell)["fixture"]
        reply = app(_task(HIST))
        counts, hidden = _hist(reply)
        small = (truth > 0) & (truth < min_cell)
        np.testing.assert_array_equal(hidden.astype(bool), small)
        np.testing.assert_array_equal(counts, np.where(small, 0, truth))
        assert reply.metrics["min_cell"] == min_cell


def test_mapped_datasets_answer_on_the_harmonized_table(tmp_path: Path) -> None:
    config, frame = _data(tmp_path)
    app = build_apps("south", config, tmp_path / "state")["fixture"]
    reply = app(_task({"type": "moments", "variables": ["glucose", "sex"]}))
    assert reply.error is None, reply.error
    glucose = pd.to_numeric(frame["glucose"]).dropna()
    assert 5.0 < glucose.mean() < 8.0  # mg/dL at this site, mmol/L after harmonization
    assert reply.arrays["q0/count"][0] == len(glucose)
    assert reply.arrays["q0/sum"][0] == pytest.approx(glucose.sum(), rel=1e-12)
    lacking = app(_task({"type": "moments", "variables": ["chol"]}))
    assert lacking.error is not None and lacking.error.kind == "ConfigError"
    assert "unknown variable 'chol'" in lacking.error.message
    assert "'glucose'" in lacking.error.message  # names what the site has


@pytest.mark.slow
def test_the_worker_subprocess_gets_the_min_cell(tmp_path: Path) -> None:
    config, frame = _data(tmp_path)
    worker = TaskWorker("south", config, tmp_path / "state", time_limit=60, min_cell=1)
    try:
        reply = worker.run(_task(HIST))
    finally:
        worker.stop()
    counts, hidden = _hist(reply)
    truth, _ = np.histogram(pd.to_numeric(frame["glucose"]).dropna(), bins=EDGES)
    assert not hidden.any() and reply.metrics["min_cell"] == 1
    np.testing.assert_array_equal(counts, truth)


def test_the_agent_passes_its_policy_min_cell_to_the_worker(tmp_path: Path) -> None:
    fed = create_federation(tmp_path / "fed", name="f", sites=["south"], coordinator_hosts=("x",))
    kit = fed.site_kits["south"]
    config = SiteDataConfig(datasets={})

    def agent(policy: SitePolicy | None) -> SiteAgent:
        governance = None
        if policy is not None:
            approvals = ApprovalStore.in_state_dir(tmp_path / "state")
            governance = SiteGovernance(policy, approvals, audit=_NoAudit())
        return SiteAgent(kit, config, state_dir=tmp_path / "state", governance=governance)

    assert agent(SitePolicy(min_cell=1)).worker.min_cell == 1
    assert agent(SitePolicy.from_dict({"min_cell": 11})).worker.min_cell == 11
    assert agent(SitePolicy()).worker.min_cell == 5
    assert agent(None).worker.min_cell == 5


class _NoAudit:
    def append(self, event: str, /, **data: Any) -> object:
        return None


def test_exact_kaplan_meier_needs_a_policy_min_cell_of_1(tmp_path: Path) -> None:
    from tests.conftest import require_mirror

    require_mirror()
    entry = {"builtin": "tcga-brca", "site": "region-0"}
    config = SiteDataConfig.model_validate({"datasets": {"tcga": entry}})
    plan = {"analytics": {"name": "km", "queries": [{"type": "kaplan_meier", "mode": "exact"}]}}
    task = Task(study_id="s", round=1, site_id="region-0", kind="analytics", plan=plan)
    refused = build_apps("region-0", config, tmp_path / "a")["tcga"](task)  # default: 5
    assert refused.error is not None and "this site's min_cell is 5 (needs <= 1)" in (
        refused.error.message
    )
    exact = build_apps("region-0", config, tmp_path / "b", min_cell=1)["tcga"](task)
    assert exact.error is None, exact.error
    events = exact.arrays["q0/count_events"]
    assert events.sum() > 0 and np.all(np.isin(events, np.arange(events.max() + 1)))


# A site memory budget (site data file ``memory_budget_mb``) ----------------------------------
HEART_MLP = {"kind": "torch", "architecture": "mlp", "hidden": [16]}  # 241 params, 964 bytes


def _heart(budget_mb: float | None) -> SiteDataConfig:
    require_mirror()
    entry = {"builtin": "heart-disease", "site": "cleveland"}
    config = {"datasets": {"heart": entry}, "checkpoint_every_s": 0, "memory_budget_mb": budget_mb}
    return SiteDataConfig.model_validate(config)


def _fit_task() -> Task:
    params = build_model(HEART_MLP).init_params((13,), np.random.default_rng(0))
    plan = {"dataset": "heart", "preprocessing": {"impute": "mean", "scale": "local"}}
    training = {"lr": 0.05, "batch_size": 8, "max_steps": 5, "momentum": 0.9, "seed": 3}
    plan["model"] = HEART_MLP
    return Task("heart-study", 1, "cleveland", "fit", params=params, config=training, plan=plan)


def _scratch_maps(folder: Path) -> list[str]:
    lines = Path("/proc/self/maps").read_text().splitlines()
    return [line for line in lines if f"{folder}/{SCRATCH_PREFIX}" in line]


@pytest.mark.torch
def test_a_memory_budget_maps_a_large_models_params_into_the_workers_folder(
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch")
    state, task = tmp_path / "state", _fit_task()
    plain = build_apps("cleveland", _heart(None), tmp_path / "plain")["heart"]
    assert plain.strict.runtime.param_offload is None
    want = plain(task)
    roomy = build_apps("cleveland", _heart(100), state)["heart"]
    assert roomy(task).arrays == want.arrays and _scratch_maps(worker_io.io_dir(state)) == []
    app = build_apps("cleveland", _heart(0.001), state)["heart"]  # 964 bytes > 1000 / 4
    offload = app.strict.runtime.param_offload
    assert offload == ParamOffload(1000, worker_io.io_dir(state))
    got = app(task)
    assert got.ok and want.ok, (got.error, want.error)
    assert all(got.arrays[k].tobytes() == want.arrays[k].tobytes() for k in want.arrays)
    spans = _scratch_maps(offload.folder)  # the reply's update lies in the scratch mapping
    assert spans and all(line.endswith("(deleted)") for line in spans)
    assert list(offload.folder.iterdir()) == []
    del got
    gc.collect()
    assert _scratch_maps(offload.folder) == []


@pytest.mark.slow  # a worker that imports torch: a few seconds
@pytest.mark.torch
def test_the_worker_subprocess_trains_within_its_budget_to_the_same_reply(
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch")
    task = _fit_task()
    want = build_apps("cleveland", _heart(None), tmp_path / "plain")["heart"](task)
    worker = TaskWorker("cleveland", _heart(0.001), tmp_path / "state", time_limit=60)
    try:
        got = worker.run(task)
    finally:
        worker.stop()
    assert got.ok, got.error
    assert all(got.arrays[k].tobytes() == want.arrays[k].tobytes() for k in want.arrays)
    assert list(worker_io.io_dir(tmp_path / "state").iterdir()) == []
