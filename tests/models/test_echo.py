"""The ``echo`` model (``fedcare.models.echo``): a model that does not learn, for benchmarks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.errors import ConfigError, ModelError
from fedcare.models.base import LocalTrainSpec
from fedcare.models.echo import EchoModel
from fedcare.models.registry import build_model
from fedcare.records.arrays import ArrayRecord


def _data(rows: int = 6) -> Dataset:
    return Dataset(X=np.ones((rows, 3)), y=np.arange(rows) % 2)


def test_fit_returns_the_params_it_got_without_copying_them() -> None:
    model = EchoModel(parameters=5)
    params = ArrayRecord({"weight": np.arange(5, dtype=np.float32)})
    got = model.fit(params, _data(6), LocalTrainSpec(), np.random.default_rng(0))
    assert got.params["weight"] is params["weight"]
    np.testing.assert_array_equal(got.params["weight"], np.arange(5, dtype=np.float32))
    assert (got.num_samples, got.num_steps, got.owned) == (6, 0, False)


def test_params_are_float32_zeros_of_the_asked_size_and_predictions_one_half() -> None:
    model = build_model({"kind": "echo", "parameters": 1000})
    params = model.init_params((3,), np.random.default_rng(0))
    assert params.shapes == {"weight": (1000,)} == model.param_shapes((3,))
    assert params["weight"].dtype == np.float32 and not params["weight"].any()
    np.testing.assert_array_equal(model.predict(params, np.ones((4, 3))), np.full(4, 0.5))
    assert model.loss(params, _data()) == pytest.approx(math.log(2.0))
    assert build_model({"kind": "echo"}).param_shapes((3,)) == {"weight": (1_000_000,)}


def test_wrong_params_and_bad_options_are_refused_by_name() -> None:
    model = EchoModel(parameters=4)
    with pytest.raises(ModelError, match=r"shape \(4,\), got \{'weight': \(3,\)\}"):
        model.fit(ArrayRecord({"weight": np.zeros(3)}), _data(), LocalTrainSpec(), None)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="parameters must be an integer >= 1, got 0"):
        EchoModel(parameters=0)
    with pytest.raises(ConfigError, match="parameters must be an integer >= 1, got -2"):
        build_model({"kind": "echo", "parameters": -2})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['hidden'\]"):
        build_model({"kind": "echo", "hidden": 3})
