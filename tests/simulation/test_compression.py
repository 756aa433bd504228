"""Heart disease (4 hospitals) with each compression method: the model's accuracy stays within a
stated tolerance of the uncompressed one, what crosses the grid is compressed, and a site whose
compressed reply is malformed is rejected by name while the round goes on."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from fedcare.data.registry import load_dataset
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from fedcare.simulation.training import grid_for, train_on_grid
from tests.conftest import REPO, require_mirror

#: Accuracy (weighted over the hospitals' test rows) within this of the uncompressed model's,
#: and final test loss within LOSS_TOLERANCE.
ACCURACY_TOLERANCE = 0.02
LOSS_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def heart() -> tuple[StudyConfig, Any]:
    require_mirror()
    study = StudyConfig.from_yaml(REPO / "examples" / "heart-disease.yaml").with_overrides(
        baselines={"local": False, "pooled": False, "cross_site": False},
        validation={"report": False},
    )
    return study, load_dataset("heart-disease", **study.dataset.options)


def _final(study: StudyConfig, ds: Any) -> dict[str, float]:
    result = run_simulation(study, dataset=ds)
    return result["history"][-1]["evaluate"]["weighted"]  # type: ignore[no-any-return]


def test_each_method_reaches_the_uncompressed_accuracy(heart: tuple[StudyConfig, Any]) -> None:
    study, ds = heart
    none = _final(study, ds)
    assert none["accuracy"] > 0.75
    specs = [{"method": m} for m in ("fp16", "bf16", "int8")] + [
        {"method": "topk", "ratio": 0.1},
        {"method": "topk", "ratio": 0.3},
    ]
    for spec in specs:
        got = _final(study.with_overrides(compression=spec), ds)
        assert abs(got["accuracy"] - none["accuracy"]) <= ACCURACY_TOLERANCE, spec
        assert abs(got["loss"] - none["loss"]) <= LOSS_TOLERANCE, spec


def test_what_crosses_the_grid_is_compressed(heart: tuple[StudyConfig, Any]) -> None:
    study, ds = heart
    study = study.with_overrides(compression={"method": "fp16"}, rounds=2)
    grid = grid_for(list(ds.sites), record=True)
    trained = train_on_grid(grid, study, ds.sites[0].train.input_shape, label="federated")
    fits = [m for m in grid.wire if isinstance(m, Reply) and m.kind == "fit"]
    assert len(fits) == 8
    assert {str(v.dtype) for r in fits for v in r.arrays.values()} == {"float16"}
    tasks = [m for m in grid.wire if isinstance(m, Task) and m.kind == "fit"]
    assert all(t.pipeline["compression"] == {"version": 1, "method": "fp16"} for t in tasks)
    fit = trained.history[-1].fit
    assert fit["compressed_bytes"] == fit["uncompressed_bytes"] // 4  # float64 params


def _out_of_range(task: Task, next_handler: Any) -> Reply:
    reply = next_handler(task)
    if task.kind != "fit":
        return reply
    arrays = dict(reply.arrays)
    idx = arrays["indices/weight"].copy()
    idx[-1] = 10_000
    return replace(reply, arrays=ArrayRecord({**arrays, "indices/weight": idx}))


def test_a_malformed_compressed_reply_is_rejected_naming_its_site(
    heart: tuple[StudyConfig, Any],
) -> None:
    study, ds = heart
    study = study.with_overrides(compression={"method": "topk", "ratio": 0.2}, rounds=3)
    grid = grid_for(list(ds.sites), mods={"va": [_out_of_range]})
    trained = train_on_grid(grid, study, ds.sites[0].train.input_shape, label="federated")
    for record in trained.history:
        assert record.fit["rejected_sites"] == ["va"]
        reason = record.fit["rejected_reasons"]["va"]
        assert "site 'va'" in reason and "index 10000 out of range" in reason
        assert record.fit["num_contributions"] == 3
    assert all(np.isfinite(v).all() for v in trained.params.values())
