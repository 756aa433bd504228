"""A bundle as one ONNX graph, so hospital systems run the model without fedcare.

The graph takes the raw features (``features``: ``[N, d]`` float32 by default, in the bundle's
order, ``NaN`` for missing) and does the bundle's frozen imputation and scaling itself:

- ``logistic`` and ``cox`` (built with the ``onnx`` helper API): ``Cast`` to double,
  ``IsNaN``/``Where`` (imputation), ``Sub``/``Div`` (scaling), ``MatMul`` + ``Add`` and, for the
  logistic model, ``Sigmoid``; outputs ``score`` (double, ``[N]``) and ``predicted`` (int64,
  ``score >= threshold``), or ``risk`` for the Cox model;
- ``sklearn`` (through skl2onnx): the same model as a scikit-learn pipeline
  (``SimpleImputer`` with the frozen means, ``StandardScaler``, ``LogisticRegression``);
  outputs skl2onnx's ``label`` and ``probabilities`` (``[N, 2]``, float32);
- ``torch`` (through ``torch.onnx``, TorchScript exporter): the network wrapped with the
  preprocessing and its task's output activation; output ``score`` (float32).

Needs the ``onnx`` extra (``pip install 'fedcare[onnx]'``: onnx, onnxruntime, skl2onnx) and,
for torch models, the ``torch`` extra. The graph's metadata names the features in order, the
bundle hash and the threshold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.errors import ConfigError, ModelError
from fedcare.inference.bundle import ModelBundle

__all__ = ["OPSET", "export_onnx", "onnx_model", "run_onnx"]

OPSET = 17
_DTYPES = ("float32", "float64")


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"ONNX export needs {module!r}: install the onnx extra (pip install 'fedcare[onnx]')"
        ) from None


def _linear_graph(bundle: ModelBundle, input_dtype: str) -> Any:
    onnx = _require("onnx")
    helper, TP = onnx.helper, onnx.TensorProto
    d = bundle.input_shape[0]
    prep = bundle.preprocessing()
    logistic = bundle.model.get("kind") != "cox"
    w = np.asarray(bundle.params["weight"], dtype=np.float64)
    b = np.asarray(bundle.params.get("bias", 0.0), dtype=np.float64).reshape(())
    consts = {"weight": w, "bias": b, "threshold": np.asarray(bundle.threshold, np.float64)}
    nodes = [helper.make_node("Cast", ["features"], ["x0"], to=TP.DOUBLE)]
    x = "x0"
    if prep.mean is not None and prep.impute:
        consts["mean"] = prep.mean
        nodes += [
            helper.make_node("IsNaN", [x], ["missing"]),
            helper.make_node("Where", ["missing", "mean", x], ["x_imputed"]),
        ]
        x = "x_imputed"
    if prep.mean is not None and prep.scale and prep.divisor is not None:
        consts["mean"], consts["divisor"] = prep.mean, prep.divisor
        nodes += [
            helper.make_node("Sub", [x, "mean"], ["x_centred"]),
            helper.make_node("Div", ["x_centred", "divisor"], ["x_scaled"]),
        ]
        x = "x_scaled"
    nodes += [
        helper.make_node("MatMul", [x, "weight"], ["z0"]),
        helper.make_node("Add", ["z0", "bias"], ["z" if logistic else "risk"]),
    ]
    outputs = []
    if logistic:
        nodes += [
            helper.make_node("Sigmoid", ["z"], ["score"]),
            helper.make_node("GreaterOrEqual", ["score", "threshold"], ["at_threshold"]),
            helper.make_node("Cast", ["at_threshold"], ["predicted"], to=TP.INT64),
        ]
        outputs = [
            helper.make_tensor_value_info("score", TP.DOUBLE, ["N"]),
            helper.make_tensor_value_info("predicted", TP.INT64, ["N"]),
        ]
    else:
        outputs = [helper.make_tensor_value_info("risk", TP.DOUBLE, ["N"])]
    elem = TP.FLOAT if input_dtype == "float32" else TP.DOUBLE
    graph = helper.make_graph(
        nodes,
        f"fedcare-{bundle.model.get('kind')}",
        [helper.make_tensor_value_info("features", elem, ["N", d])],
        outputs,
        initializer=[
            onnx.numpy_helper.from_array(np.asarray(v, dtype=np.float64), name=k)
            for k, v in consts.items()
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _sklearn_model(bundle: ModelBundle) -> Any:
    _require("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    d, prep = bundle.input_shape[0], bundle.preprocessing()
    steps: list[tuple[str, Any]] = []
    if prep.mean is not None and prep.impute:
        imputer = SimpleImputer(strategy="mean")
        imputer.statistics_, imputer.n_features_in_ = prep.mean.copy(), d
        steps.append(("impute", imputer))
    if prep.mean is not None and prep.scale and prep.divisor is not None:
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_ = prep.mean.copy(), prep.divisor.copy()
        scaler.var_, scaler.n_features_in_ = prep.divisor**2, d
        steps.append(("scale", scaler))
    clf = LogisticRegression()
    clf.coef_ = np.asarray(bundle.params["weight"], dtype=np.float64).reshape(1, d)
    clf.intercept_ = np.asarray(bundle.params["bias"], dtype=np.float64).reshape(1)
    clf.classes_, clf.n_features_in_ = np.array([0, 1]), d
    steps.append(("model", clf))
    sample = np.zeros((1, d), dtype=np.float32)
    options = {id(clf): {"zipmap": False}}
    return to_onnx(Pipeline(steps), sample, options=options, target_opset=OPSET)


def _torch_model(bundle: ModelBundle) -> Any:
    _require("onnx")
    import tempfile
    import warnings

    from fedcare.models.registry import build_model
    from fedcare.models.torch import TorchAdapter
    from fedcare.models.torch_runtime import import_torch
    from fedcare.records.arrays import ArrayRecord

    adapter = build_model(bundle.model)
    if not isinstance(adapter, TorchAdapter) or adapter.task not in ("binary", "regression"):
        raise ConfigError("ONNX export of torch models covers binary and regression tasks")
    torch = import_torch()  # the torch extra (ModelError naming it when missing)

    net = adapter.load(ArrayRecord(dict(bundle.params)), bundle.input_shape).eval()
    prep = bundle.preprocessing()
    with torch.no_grad():  # the output width, fixed before tracing
        probe = torch.zeros((1, *bundle.input_shape), dtype=torch.float32)
        width = int(net(probe).reshape(1, -1).shape[1])
    wrapped = _TorchDeployed(torch, net, prep, width=width, binary=adapter.task == "binary")
    sample = torch.zeros((2, *bundle.input_shape), dtype=torch.float32)
    with tempfile.TemporaryDirectory(prefix="fedcare-onnx-") as tmp, warnings.catch_warnings():
        # the TorchScript exporter: the torch.export one needs onnxscript, not in the extra
        warnings.simplefilter("ignore", DeprecationWarning)
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            wrapped,
            (sample,),
            path,
            input_names=["features"],
            output_names=["score"],
            dynamic_axes={"features": {0: "N"}, "score": {0: "N"}},
            opset_version=OPSET,
            dynamo=False,
        )
        return _require("onnx").load_from_string(path.read_bytes())


def _TorchDeployed(torch: Any, net: Any, prep: Any, *, width: int, binary: bool) -> Any:
    """``net`` behind the frozen preprocessing, with the task's activation (float32)."""

    class Deployed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.impute, self.scale = prep.mean is not None and prep.impute, prep.scale
            if prep.mean is not None:
                self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32))
                self.register_buffer("divisor", torch.tensor(prep.divisor, dtype=torch.float32))

        def forward(self, x: Any) -> Any:
            if self.impute:
                x = torch.where(torch.isnan(x), self.mean, x)
            if self.scale and hasattr(self, "divisor"):
                x = (x - self.mean) / self.divisor
            out = self.net(x).reshape(-1, width)
            if width == 1:
                out = out[:, 0]
            return torch.sigmoid(out) if binary else out

    return Deployed().eval()


def onnx_model(bundle: ModelBundle, *, input_dtype: str = "float32") -> Any:
    """The bundle's model as an ``onnx.ModelProto`` (checked by ``onnx.checker``).

    Raises
    ------
    ConfigError
        The onnx extra is not installed, the model's kind has no exporter (a study package),
        or the bundle lacks what prediction needs.
    """
    if input_dtype not in _DTYPES:
        raise ConfigError(f"input_dtype must be one of {_DTYPES}, got {input_dtype!r}")
    if bundle.missing:
        raise ConfigError(f"the bundle cannot be exported: it lacks {', '.join(bundle.missing)}")
    kind = bundle.model.get("kind")
    if kind in ("logistic", "cox"):
        model = _linear_graph(bundle, input_dtype)
    elif kind == "sklearn":
        model = _sklearn_model(bundle)
    elif kind == "torch":
        model = _torch_model(bundle)
    else:
        raise ConfigError(
            f"no ONNX exporter for model kind {kind!r} (logistic, cox, sklearn, torch)"
        )
    onnx = _require("onnx")
    meta = {
        "fedcare.features": json.dumps(bundle.features),
        "fedcare.bundle_sha256": bundle.bundle_hash,
        "fedcare.threshold": repr(bundle.threshold),
        "fedcare.task": str(bundle.task),
    }
    onnx.helper.set_model_props(model, meta)
    model.producer_name = "fedcare"
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ModelError(f"the exported ONNX graph does not check: {err}") from None
    return model


def export_onnx(bundle: ModelBundle, out: Path, *, input_dtype: str = "float32") -> Path:
    """Write the bundle's model to ``out`` (``.onnx``); see :func:`onnx_model`."""
    model = onnx_model(bundle, input_dtype=input_dtype)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.SerializeToString())
    return out


def run_onnx(model_path: Path, X: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the ONNX model at ``model_path`` for raw rows ``X`` (onnxruntime, CPU):
    what a hospital system would get, for parity checks."""
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    dtype = np.float64 if spec.type == "tensor(double)" else np.float32
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {spec.name: np.asarray(X, dtype=dtype)})
    return dict(zip(names, (np.asarray(v) for v in values), strict=True))
