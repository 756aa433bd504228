"""Model adapters: numpy logistic regression and Cox, scikit-learn, PyTorch (extra).

Every adapter implements :class:`ModelAdapter`; :func:`build_model` makes one from a study's
``model:`` mapping. Importing this package never imports torch: only building a torch model
does (and says ``pip install 'fedcare[torch]'`` when it is missing).
"""

from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.models.cox import CoxPH
from fedcare.models.logistic import LogisticRegression
from fedcare.models.registry import MODEL_KINDS, TORCH_ARCHITECTURES, build_model
from fedcare.models.sklearn import SklearnLogistic
from fedcare.models.torch import TorchAdapter, TorchSurvivalAdapter, make_torch_adapter

__all__ = [
    "MODEL_KINDS",
    "TORCH_ARCHITECTURES",
    "CoxPH",
    "FitResult",
    "LocalTrainSpec",
    "LogisticRegression",
    "ModelAdapter",
    "SklearnLogistic",
    "TorchAdapter",
    "TorchSurvivalAdapter",
    "build_model",
    "make_torch_adapter",
]
