"""The public model interface researchers code against is importable from fedcare.models."""

from __future__ import annotations

import fedcare.models as models

PUBLIC = (
    "ModelAdapter",
    "FitResult",
    "LocalTrainSpec",
    "make_torch_adapter",
    "SklearnModel",
    "NumpyModel",
)


def test_the_model_interface_is_exported() -> None:
    assert set(PUBLIC) <= set(models.__all__)
    for name in models.__all__:
        assert getattr(models, name) is not None, name
    assert models.NumpyModel.__module__ == "fedcare.models.numpy_model"
    assert models.SklearnModel.__module__ == "fedcare.models.sklearn_model"
