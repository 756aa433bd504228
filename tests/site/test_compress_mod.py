"""The site half of compression: the reply carries only the compressed update; the error-feedback
residual stays at the site, is saved in its state folder and survives a restart."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from fedcare.aggregation.compress_codec import decode
from fedcare.aggregation.compression import compression_spec
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.records.plan import TrainingPlan
from fedcare.site.compress import CompressionMod
from fedcare.site.plans import Refusal, check_task_plan
from fedcare.strategy.site_half import site_pipeline_for

from .governance_helpers import plan, task

PARAMS = ArrayRecord({"w": np.zeros((10, 10), np.float32), "b": np.zeros(3, np.float32)})
PIPELINE = {"compression": compression_spec("topk", 0.1)}


def _task(round: int, *, kind: str = "fit", pipeline: dict | None = None) -> Task:
    return Task(
        study_id="s1",
        round=round,
        site_id="a",
        kind=kind,
        params=PARAMS,  # type: ignore[arg-type]
        pipeline=PIPELINE if pipeline is None else pipeline,
    )


def _trainer(seed: int):
    def train(task: Task) -> Reply:
        rng = np.random.default_rng([seed, task.round])
        arrays = PARAMS.map(lambda v: rng.normal(size=v.shape).astype(np.float32))
        return Reply(
            task.study_id, task.round, task.site_id, task.kind, arrays=arrays, num_samples=10
        )

    return train


def _true(round: int) -> ArrayRecord:
    return _trainer(0)(_task(round)).arrays


def test_reply_carries_only_compressed_arrays_and_the_residual_is_saved(tmp_path: Path) -> None:
    mod = CompressionMod(tmp_path)
    reply = mod(_task(1), _trainer(0))
    assert sorted(reply.arrays) == ["indices/b", "indices/w", "values/b", "values/w"]
    assert reply.arrays.nbytes < 0.3 * PARAMS.nbytes
    saved = list(tmp_path.glob("compression-*.npz"))
    assert [p.name for p in saved] == [mod.path("s1").name]  # type: ignore[union-attr]
    with np.load(saved[0]) as npz:
        assert int(npz["round"]) == 1
        residual = ArrayRecord(
            {k[len("after/") :]: npz[k] for k in npz.files if k.startswith("after/")}
        )
    sent = decode("a", reply.arrays, PARAMS, "topk", 0.1)
    for k in PARAMS:  # sent + kept = trained
        assert np.allclose(sent[k] + residual[k], _true(1)[k], atol=1e-6)


def test_a_restarted_site_continues_with_its_residual_and_a_retry_repeats(tmp_path: Path) -> None:
    first = CompressionMod(tmp_path)
    first(_task(1), _trainer(0))
    round2 = first(_task(2), _trainer(0))
    restarted = CompressionMod(tmp_path)  # a new worker: reads the residual from disk
    again = restarted(_task(2), _trainer(0))  # round 2 retried (its reply was lost)
    assert again.arrays == round2.arrays  # same residual as the first attempt
    fresh = CompressionMod(None)(_task(2), _trainer(0))  # no residual: a different update
    assert fresh.arrays != round2.arrays
    r3 = restarted(_task(3), _trainer(0))
    assert int(np.load(restarted.path("s1"))["round"]) == 3  # type: ignore[arg-type]
    assert r3.arrays != round2.arrays


def test_sum_of_sent_plus_residual_equals_sum_of_trained(tmp_path: Path) -> None:
    mod = CompressionMod(tmp_path)
    total_sent = PARAMS.astype(np.float64)
    total_true = PARAMS.astype(np.float64)
    for rnd in range(1, 6):
        reply = mod(_task(rnd), _trainer(0))
        total_sent = total_sent + decode("a", reply.arrays, PARAMS, "topk", 0.1).astype(np.float64)
        total_true = total_true + _true(rnd).astype(np.float64)
    residual = mod.residuals.get("s1").after.astype(np.float64)
    assert (total_true - total_sent - residual).norm() < 1e-5


def test_tasks_without_compression_and_evaluations_pass_unchanged(tmp_path: Path) -> None:
    mod = CompressionMod(tmp_path)
    plain = mod(_task(1, pipeline={}), _trainer(0))
    assert plain.arrays == _true(1)
    evaluated = mod(_task(1, kind="evaluate"), _trainer(0))
    assert sorted(evaluated.arrays) == ["b", "w"]
    assert not list(tmp_path.iterdir())  # nothing kept


def test_fp16_keeps_no_residual(tmp_path: Path) -> None:
    mod = CompressionMod(tmp_path)
    reply = mod(_task(1, pipeline={"compression": compression_spec("fp16")}), _trainer(0))
    assert {str(v.dtype) for v in reply.arrays.values()} == {"float16"}
    assert not list(tmp_path.iterdir())


def test_the_site_derives_compression_from_the_plan_and_refuses_other_pipelines() -> None:
    p = plan(compression={"method": "topk", "ratio": 0.2})
    derived = site_pipeline_for(p)
    assert derived == {"compression": {"version": 1, "method": "topk", "ratio": 0.2}}

    def fit(pipeline: dict) -> Task:
        t = task(task_plan=p.to_task_plan(), config={**p.training, "seed": 1})
        return replace(t, pipeline=pipeline)

    assert isinstance(check_task_plan(fit(derived)), TrainingPlan)
    for bad, needle in [
        ({}, "compression missing"),
        ({"compression": {**derived["compression"], "ratio": 0.9}}, "compression is"),
    ]:
        refusal = check_task_plan(fit(bad))
        assert isinstance(refusal, Refusal) and refusal.kind == "plan-pipeline-mismatch"
        assert needle in refusal.message
