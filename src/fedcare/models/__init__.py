"""Model adapters: the interface a researcher implements, and ready adapters around it.

The public, stable interface (see ``docs/model-interface.md``):

* :class:`ModelAdapter`, :class:`FitResult`, :class:`LocalTrainSpec`: the contract;
* :func:`make_torch_adapter`: any PyTorch ``nn.Module`` factory, for every task;
* :class:`SklearnModel`: any scikit-learn linear estimator (``coef_``/``intercept_``);
* :class:`NumpyModel`: a model written as ``init``, ``predict`` and ``gradient`` functions.

Built-in kinds (:func:`build_model` makes one from a study's ``model:`` mapping): numpy
logistic regression and Cox, scikit-learn logistic, small torch nets. Importing this package
never imports torch: only building a torch model does (and says
``pip install 'fedcare[torch]'`` when it is missing).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
    from fedcare.models.cox import CoxPH
    from fedcare.models.logistic import LogisticRegression
    from fedcare.models.numpy_model import NumpyModel
    from fedcare.models.registry import MODEL_KINDS, TORCH_ARCHITECTURES, build_model
    from fedcare.models.sklearn import SklearnLogistic
    from fedcare.models.sklearn_model import SklearnModel
    from fedcare.models.torch import TorchAdapter, TorchSurvivalAdapter, make_torch_adapter

# Imported on first use (PEP 562), so that importing one submodule (a study package's
# runner imports fedcare.models.base and fedcare.data.base) does not import them all.
_WHERE = {
    "FitResult": "fedcare.models.base",
    "LocalTrainSpec": "fedcare.models.base",
    "ModelAdapter": "fedcare.models.base",
    "CoxPH": "fedcare.models.cox",
    "LogisticRegression": "fedcare.models.logistic",
    "NumpyModel": "fedcare.models.numpy_model",
    "MODEL_KINDS": "fedcare.models.registry",
    "TORCH_ARCHITECTURES": "fedcare.models.registry",
    "build_model": "fedcare.models.registry",
    "SklearnLogistic": "fedcare.models.sklearn",
    "SklearnModel": "fedcare.models.sklearn_model",
    "TorchAdapter": "fedcare.models.torch",
    "TorchSurvivalAdapter": "fedcare.models.torch",
    "make_torch_adapter": "fedcare.models.torch",
}

__all__ = [
    "MODEL_KINDS",
    "TORCH_ARCHITECTURES",
    "CoxPH",
    "FitResult",
    "LocalTrainSpec",
    "LogisticRegression",
    "ModelAdapter",
    "NumpyModel",
    "SklearnLogistic",
    "SklearnModel",
    "TorchAdapter",
    "TorchSurvivalAdapter",
    "build_model",
    "make_torch_adapter",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
