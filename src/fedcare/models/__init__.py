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

from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.models.cox import CoxPH
from fedcare.models.logistic import LogisticRegression
from fedcare.models.numpy_model import NumpyModel
from fedcare.models.registry import MODEL_KINDS, TORCH_ARCHITECTURES, build_model
from fedcare.models.sklearn import SklearnLogistic
from fedcare.models.sklearn_model import SklearnModel
from fedcare.models.torch import TorchAdapter, TorchSurvivalAdapter, make_torch_adapter

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
