"""build_model: kinds, options, clear ConfigErrors, and torch only when asked for."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from fedcare.errors import ConfigError
from fedcare.models import (
    CoxPH,
    LogisticRegression,
    SklearnLogistic,
    build_model,
)


@pytest.mark.parametrize(
    ("spec", "cls", "task"),
    [
        ({"kind": "logistic"}, LogisticRegression, "binary"),
        ({"kind": "logistic", "task": "binary", "init_scale": 0.01}, LogisticRegression, "binary"),
        ({"kind": "cox"}, CoxPH, "survival"),
        ({"kind": "sklearn", "init_scale": 0}, SklearnLogistic, "binary"),
    ],
)
def test_numpy_and_sklearn_kinds(spec: dict[str, Any], cls: type, task: str) -> None:
    model = build_model(spec)
    assert type(model) is cls and model.task == task
    assert model.init_scale == spec.get("init_scale", 0.0)  # type: ignore[attr-defined]


def test_torch_kind_builds_each_architecture_with_options() -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng
    cnn = build_model({"kind": "torch", "architecture": "cnn_small", "channels": [4], "hidden": 8})
    assert cnn.task == "binary"
    assert cnn.init_params((1, 28, 28), rng(0)).num_params == 4 * 9 + 4 + 4 * 14 * 14 * 8 + 8 + 9
    spec = {"kind": "torch", "architecture": "mlp", "hidden": [6, 3], "task": "survival"}
    net = build_model(spec)
    assert net.task == "survival"
    assert net.init_params((5,), rng(0)).shapes["5.weight"] == (1, 3)
    assert build_model({"kind": "torch", "architecture": "mlp", "dropout": 0.2}).task == "binary"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            {},
            r"has no 'kind'; valid kinds: "
            r"\['cox', 'echo', 'logistic', 'package', 'sklearn', 'torch'\]",
        ),
        ({"kind": "xgboost"}, r"unknown kind 'xgboost'; valid kinds: \['cox', 'echo', 'logistic'"),
        ({"kind": "logistic", "lr": 0.1}, r"unknown option\(s\) \['lr'\]; valid options: \["),
        ({"kind": "logistic", "init_scale": -1}, "init_scale must be a number >= 0, got -1"),
        ({"kind": "logistic", "init_scale": "big"}, "init_scale must be a number"),
        (
            {"kind": "cox", "task": "binary"},
            r"task 'binary' is not supported; valid: \['survival'\]",
        ),
        ({"kind": "torch"}, r"architecture None is not built in; valid architectures: \['cnn_"),
        ({"kind": "torch", "architecture": "resnet"}, "architecture 'resnet' is not built in"),
        (
            {"kind": "torch", "architecture": "cnn_small", "dropout": 0.1},
            r"unknown option\(s\) \['dropout'\]; valid options: \['architecture', 'channels'",
        ),
        ({"kind": "torch", "architecture": "mlp", "hidden": 32}, "hidden must be a list of int"),
        ({"kind": "torch", "architecture": "mlp", "dropout": 1.0}, "dropout must be < 1.0"),
        ({"kind": "torch", "architecture": "mlp", "task": "multiclass"}, "task 'multiclass'"),
        (
            {"kind": "torch", "architecture": "cnn_small", "hidden": True},
            "hidden must be an integer >= 1, got True",
        ),
    ],
)
def test_bad_specs_raise_config_errors_naming_the_problem(spec: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_model(spec)


def test_spec_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a mapping, got list"):
        build_model(["logistic"])  # type: ignore[arg-type]


def run_without_torch(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``import torch`` fails."""
    prelude = textwrap.dedent(
        """
        import sys

        class NoTorch:  # a finder that makes `import torch` fail as if it were not installed
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, NoTorch())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_models_import_and_work_without_torch() -> None:
    result = run_without_torch(
        """
        import numpy as np
        import fedcare.models
        from fedcare.errors import ModelError
        from fedcare.models import build_model, make_torch_adapter
        model = build_model({"kind": "logistic"})
        model.init_params((3,), np.random.default_rng(0))
        for build in (
            lambda: build_model({"kind": "torch", "architecture": "mlp"}),
            lambda: make_torch_adapter(lambda shape: None),
        ):
            try:
                build()
            except ModelError as exc:
                print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("pip install 'fedcare[torch]'" in line for line in lines)


def test_importing_models_does_not_import_torch() -> None:
    code = "import sys, fedcare.models\nprint('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
