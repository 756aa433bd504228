"""Built-in PyTorch architectures (importing this module imports torch).

Both nets end in ``outputs`` outputs (default 1): a logit for binary tasks, a risk score for
survival, a value for regression; ``K`` logits for a multiclass or multilabel task. Neither
uses BatchNorm, whose running statistics average poorly across sites.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

from torch import nn

from fedcare.errors import ModelError

__all__ = ["ARCHITECTURES", "architecture_factory", "cnn_small", "mlp"]


def cnn_small(
    input_shape: tuple[int, ...],
    *,
    channels: Sequence[int] = (16, 32),
    hidden: int = 64,
    outputs: int = 1,
) -> nn.Module:
    """A small CNN for ``(c, h, w)`` images such as 1×28×28 chest X-rays.

    Each entry of ``channels`` adds a 3×3 convolution (padding 1), a ReLU and a 2×2 max-pool;
    then a ``hidden``-unit ReLU layer and one output. With the defaults on 1×28×28 inputs:
    conv 1→16 (28→14), conv 16→32 (14→7), 1568→64→1; 105,281 parameters.

    Parameters
    ----------
    input_shape:
        ``(c, h, w)``; ``h`` and ``w`` must be at least ``2 ** len(channels)``.
    channels:
        Output channels of each convolution block.
    hidden:
        Width of the fully connected hidden layer.
    outputs:
        Number of outputs (logits) per example.
    """
    if len(input_shape) != 3:
        raise ModelError(f"cnn_small needs (channels, height, width) inputs, got {input_shape}")
    c, h, w = (int(v) for v in input_shape)
    layers: list[nn.Module] = []
    for out in channels:
        if h < 2 or w < 2:
            raise ModelError(
                f"cnn_small: input {input_shape} is too small for {len(channels)} pooling blocks"
            )
        layers += [nn.Conv2d(c, out, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c, h, w = out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, outputs)]
    return nn.Sequential(*layers)


def mlp(
    input_shape: tuple[int, ...],
    *,
    hidden: Sequence[int] = (32,),
    dropout: float = 0.0,
    outputs: int = 1,
) -> nn.Module:
    """A multilayer perceptron for tabular inputs (other shapes are flattened).

    Parameters
    ----------
    input_shape:
        Shape of one example; its size is the number of input features.
    hidden:
        Widths of the hidden ReLU layers (empty: a linear model).
    dropout:
        Dropout probability after each hidden layer.
    outputs:
        Number of outputs (logits) per example.
    """
    width = math.prod(int(v) for v in input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for out in hidden:
        layers += [nn.Linear(width, out), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = out
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


#: Architecture name -> builder ``(input_shape, **options) -> nn.Module``.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"cnn_small": cnn_small, "mlp": mlp}


def architecture_factory(name: str, **options: object) -> Callable[[tuple[int, ...]], nn.Module]:
    """A picklable factory ``input_shape -> nn.Module`` for a built-in architecture."""
    if name not in ARCHITECTURES:
        raise ModelError(f"unknown torch architecture {name!r}; built-in: {sorted(ARCHITECTURES)}")
    return partial(ARCHITECTURES[name], **options)
