"""A ResNet-18 for 28×28 chest X-rays, written in the study package (torch only).

The MedMNIST v2 variant of ResNet-18 (He et al. 2016) for 28×28 inputs: a 3×3 stem convolution
with stride 1 and no max-pool, then four stages of two BasicBlocks each with strides 1, 2, 2, 2
(28→28→14→7→4), global average pooling and one logit. ``width`` is the first stage's channel
count (the stages have ``width``, ``2·width``, ``4·width``, ``8·width``): 64 is the standard
ResNet-18 (11.2 M parameters); 16 (0.7 M) trains on a laptop CPU.

The entry point :func:`build` returns fedcare's torch adapter around the network, so the package
holds only the architecture; the adapter places it on the device the site allows (or the
``device`` option) and runs bfloat16 autocast on CUDA with ``amp``. Params are the module's
``state_dict``: the BatchNorm running means and variances (buffers, not parameters) travel
with the weights and are averaged like them, so the global model evaluates with statistics
from every site.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from torch import nn

from fedcare.errors import ModelError
from fedcare.models import TorchAdapter, make_torch_adapter

Norm = Literal["batch", "group"]


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    # GroupNorm: no running statistics, so nothing site-specific is averaged
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (a 1×1 projection when shapes change)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: Norm) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(norm, c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(norm, c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images: 3×3 stride-1 stem, no max-pool, blocks [2, 2, 2, 2].

    Parameters
    ----------
    in_channels:
        Image channels (1 for grayscale X-rays).
    width:
        Channels of the first stage; the stages have 1, 2, 4 and 8 times as many.
    norm:
        ``"batch"`` (BatchNorm, the standard ResNet) or ``"group"`` (GroupNorm).
    """

    def __init__(self, in_channels: int = 1, width: int = 64, norm: Norm = "batch") -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn = _norm(norm, width)
        blocks: list[nn.Module] = []
        c_in = width
        for stage, stride in enumerate((1, 2, 2, 2)):
            c_out = width * 2**stage
            blocks += [BasicBlock(c_in, c_out, stride, norm), BasicBlock(c_out, c_out, 1, norm)]
            c_in = c_out
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.stem(x)))
        h = self.layers(h)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


def resnet18(input_shape: tuple[int, ...], *, width: int = 64, norm: Norm = "batch") -> nn.Module:
    """A :class:`ResNet18` for ``(channels, height, width)`` inputs."""
    if len(input_shape) != 3:
        raise ModelError(f"resnet18 needs (channels, height, width) inputs, got {input_shape}")
    return ResNet18(in_channels=int(input_shape[0]), width=width, norm=norm)


def build(
    width: int = 64,
    norm: Norm = "batch",
    device: str | None = None,
    amp: bool = False,
    predict_batch_size: int = 512,
) -> TorchAdapter:
    """The package's entry point: fedcare's binary torch adapter around :func:`resnet18`.

    Parameters
    ----------
    width:
        First-stage channels (64: the standard ResNet-18).
    norm:
        ``"batch"`` or ``"group"``.
    device:
        ``None`` (default): the device the site's policy allows (``devices:``), else the CPU;
        or a torch device such as ``"cuda"``, which falls back to the CPU where CUDA is absent.
    amp:
        bfloat16 mixed precision (autocast) on CUDA.
    predict_batch_size:
        Images per forward pass when predicting.
    """
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ModelError(f"width must be an integer >= 1, got {width!r}")
    if norm not in ("batch", "group"):
        raise ModelError(f"norm must be 'batch' or 'group', got {norm!r}")
    return make_torch_adapter(
        partial(resnet18, width=width, norm=norm),
        "binary",
        name=f"resnet18(width={width})",
        predict_batch_size=predict_batch_size,
        device=device,
        amp=amp,
    )
