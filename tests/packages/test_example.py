"""The example package (examples/packages/numpy-logistic) is real: it imports and trains."""

from __future__ import annotations

import importlib.util

import numpy as np

from fedcare.data.base import Dataset
from fedcare.models.base import LocalTrainSpec, ModelAdapter
from fedcare.records.package import PackageManifest
from tests.packages.conftest import EXAMPLE


def test_the_example_entry_point_is_a_model_adapter_that_learns() -> None:
    manifest = PackageManifest.from_folder(EXAMPLE)
    spec = importlib.util.spec_from_file_location(manifest.module, EXAMPLE / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    adapter = getattr(module, manifest.object_name)()
    assert isinstance(adapter, ModelAdapter) and adapter.task == manifest.task

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = (X @ np.array([2.0, -1.0, 0.5]) > 0).astype(np.float64)
    data = Dataset(X=X, y=y)
    params = adapter.init_params((3,), rng)
    before = adapter.loss(params, data)
    fitted = adapter.fit(params, data, LocalTrainSpec(epochs=20, lr=0.5, batch_size=50), rng)
    assert fitted.num_samples == 400 and fitted.num_steps == 20 * 8
    assert fitted.params.shapes == params.shapes
    assert adapter.loss(fitted.params, data) < before / 2
    accuracy = np.mean((adapter.predict(fitted.params, X) > 0.5) == y)
    assert accuracy > 0.95
