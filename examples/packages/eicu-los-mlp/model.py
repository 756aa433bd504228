"""An MLP regressor of ICU length of stay (days), through fedcare's torch adapter.

The entry point :func:`build` returns :func:`fedcare.models.make_torch_adapter` for the
``regression`` task around a small multilayer perceptron; the package chooses the loss. Length
of stay is skewed (most stays last one to three days, a few several weeks), and the study is
judged on the mean absolute error, so the default loss is the absolute error (L1: its minimizer
is the conditional median); ``mse`` and ``huber`` are options.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from fedcare.errors import ModelError
from fedcare.models import TorchAdapter, make_torch_adapter

LOSSES = ("l1", "mse", "huber")


def mlp(
    input_shape: tuple[int, ...],
    *,
    hidden: Sequence[int] = (64, 32),
    dropout: float = 0.0,
    init_bias: float = 0.0,
) -> nn.Module:
    """ReLU layers of widths ``hidden`` (with dropout), then one output starting at
    ``init_bias`` (a typical length of stay, so the first rounds need not learn the offset)."""
    width = math.prod(int(v) for v in input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for out in hidden:
        layers += [nn.Linear(width, out), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = out
    head = nn.Linear(width, 1)
    nn.init.constant_(head.bias, init_bias)
    return nn.Sequential(*layers, head)


def _l1(outputs: Any, target: Any) -> Any:
    return torch.nn.functional.l1_loss(outputs, target)


def _huber(outputs: Any, target: Any) -> Any:
    return torch.nn.functional.huber_loss(outputs, target, delta=1.0)


def _mse(outputs: Any, target: Any) -> Any:
    return torch.nn.functional.mse_loss(outputs, target)


def build(
    hidden: Sequence[int] = (64, 32),
    dropout: float = 0.0,
    loss: str = "l1",
    init_bias: float = 0.0,
) -> TorchAdapter:
    """The package's entry point: a regression adapter around :func:`mlp`.

    Parameters
    ----------
    hidden:
        Widths of the hidden layers (empty: a linear model).
    dropout:
        Dropout probability after each hidden layer, in ``[0, 1)``.
    loss:
        ``"l1"`` (absolute error, the default), ``"mse"`` or ``"huber"`` (delta 1 day).
    init_bias:
        The output's initial bias (days).
    """
    if isinstance(hidden, (str, bytes)) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden
    ):
        raise ModelError(f"hidden must be a list of integers >= 1, got {hidden!r}")
    if not 0.0 <= dropout < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {dropout!r}")
    if loss not in LOSSES:
        raise ModelError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    factory = partial(mlp, hidden=tuple(hidden), dropout=float(dropout), init_bias=init_bias)
    loss_fn = {"l1": _l1, "mse": _mse, "huber": _huber}[loss]
    return make_torch_adapter(
        factory, "regression", loss=loss_fn, name=f"mlp{list(hidden)} ({loss})"
    )
