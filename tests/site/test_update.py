"""A site's update computed into the trained params: the same bytes, one model copy less."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from fedcare.data.base import Dataset, SiteData
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.models.registry import build_model
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Task
from fedcare.site.runtime import SiteRuntime
from fedcare.site.update import consume_update


def owned(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """Read-only views of private writeable arrays, as the torch adapter's export gives."""
    return ArrayRecord({k: np.array(v).view() for k, v in arrays.items()}, copy=False)


def records() -> tuple[ArrayRecord, ArrayRecord]:
    rng = np.random.default_rng(0)
    start = ArrayRecord({"w": rng.normal(size=(5, 3)).astype(np.float32), "b": np.float32(0.5)})
    trained = {k: (v + rng.normal(size=v.shape)).astype(np.float32) for k, v in start.items()}
    return start, owned(trained)


def test_an_owned_result_takes_its_update_in_place() -> None:
    start, trained = records()
    want = {k: trained[k] - start[k] for k in start}
    kept = {k: start[k].copy() for k in start}
    update = consume_update(FitResult(trained, 10, 1, owned=True), start)
    for k in start:
        assert update[k].tobytes() == want[k].tobytes()
        assert np.shares_memory(update[k], trained[k])  # no new array
        assert not update[k].flags.writeable
        assert np.array_equal(start[k], kept[k])


def test_a_result_not_owned_or_sharing_memory_gets_new_arrays() -> None:
    start, trained = records()
    before = {k: trained[k].copy() for k in trained}
    update = consume_update(FitResult(trained, 10, 1), start)
    assert not np.shares_memory(update["w"], trained["w"])
    assert np.array_equal(trained["w"], before["w"])
    kept = start["w"].copy()
    aliased = owned({"b": start["b"]})
    aliased = ArrayRecord({"w": start["w"], "b": aliased["b"]}, copy=False)  # "w" is start's
    update = consume_update(FitResult(aliased, 10, 1, owned=True), start)
    assert np.array_equal(start["w"], kept)  # never written through
    assert not np.any(update["w"]) and not np.shares_memory(update["w"], start["w"])


def test_an_upcast_update_gets_a_new_array() -> None:
    start, trained = records()
    start64 = start.astype(np.float64)
    update = consume_update(FitResult(trained, 10, 1, owned=True), start64)
    assert update["w"].dtype == np.float64
    assert np.array_equal(update["w"], trained["w"] - start64["w"])


class Copying(ModelAdapter):
    """The adapter it wraps, with its fit's params copied and not owned (the old site path)."""

    def __init__(self, inner: ModelAdapter) -> None:
        self.inner = inner
        self.task = inner.task  # type: ignore[misc]

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        return self.inner.init_params(input_shape, rng)

    def fit(self, params: ArrayRecord, data: Dataset, spec: LocalTrainSpec, rng: Any) -> FitResult:
        result = self.inner.fit(params, data, spec, rng)
        return replace(result, params=ArrayRecord(result.params), owned=False)

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        return self.inner.predict(params, X)

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        return self.inner.loss(params, data)


MLP = {"kind": "torch", "architecture": "mlp", "hidden": [16, 8]}
CONFIGS = {
    "fedavg": {},
    "fedprox": {"prox_mu": 0.1},
    "scaffold": {"algorithm": "scaffold"},
    "clipped": {},
}


@pytest.mark.torch
@pytest.mark.parametrize("name", list(CONFIGS))
def test_site_replies_are_bitwise_those_of_the_copying_path(name: str) -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 6))
    data = SiteData(
        "a", Dataset(X[:40], (X[:40, 0] > 0) * 1.0), Dataset(X[40:], (X[40:, 0] > 0) * 1.0)
    )
    start = build_model(MLP).init_params((6,), np.random.default_rng(2))
    control = ArrayRecord({k: np.full_like(v, 0.01) for k, v in start.items()})
    config = {"lr": 0.05, "max_steps": 3, "batch_size": 8, "seed": 4, **CONFIGS[name]}
    pipeline = {"norm_bound": {"version": 1, "max_norm": 1e-3}} if name == "clipped" else {}
    sites = [SiteRuntime(data), SiteRuntime(data, model_builder=lambda s: Copying(build_model(s)))]
    replies: list[list[ArrayRecord]] = [[], []]
    for round in (1, 2):  # round 2 of SCAFFOLD starts from the site's own control variate
        task = Task("s", round, "a", "fit", params=start, config=config, plan={"model": MLP},
                    arrays={"control": control}, pipeline=pipeline)  # fmt: skip
        for site, got in zip(sites, replies, strict=True):
            got.append(site.fit(task).arrays)
    for fast, slow in zip(*replies, strict=True):
        assert list(fast) == list(slow) and fast.norm() > 0
        assert all(fast[k].tobytes() == slow[k].tobytes() for k in fast)
    assert start == build_model(MLP).init_params((6,), np.random.default_rng(2))  # untouched
