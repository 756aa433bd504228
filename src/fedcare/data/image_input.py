"""How an image dataset's pixels become a model's input, as one recorded, shared function.

A model trained on images saw them as a dataset's loader prepared them: a size, a number of
channels and an intensity mapping ``(pixel - offset) / divisor`` in float32. The same
:class:`ImageInput` is used by the dataset's loader (training: PneumoniaMNIST's 8-bit images
divided by 255) and, recorded in a model bundle (``bundle.json``'s ``image``), by
``fedcare site predict`` on a DICOM folder, so prediction sees images exactly as training did.

:func:`image_input_of` gives the recorded input of a built-in image dataset by name; a dataset
that is not listed has none (a bundle then records none and DICOM prediction says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.errors import ConfigError

__all__ = ["PNEUMONIAMNIST_INPUT", "ImageInput", "image_input_of"]


@dataclass(frozen=True)
class ImageInput:
    """Images of ``size`` (rows, columns) with ``channels`` channels, mapped to
    ``(pixel - offset) / divisor`` in float32. ``pixel_range``: the raw pixel values the model
    was trained on (8-bit images: 0 to 255), or None (not recorded)."""

    size: tuple[int, int]
    channels: int = 1
    offset: float = 0.0
    divisor: float = 1.0
    pixel_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1 or self.channels < 1:
            raise ConfigError(f"image input: bad size {self.size} or channels {self.channels}")
        if not (np.isfinite(self.offset) and np.isfinite(self.divisor) and self.divisor != 0):
            raise ConfigError(
                f"image input: offset {self.offset} and divisor {self.divisor} must be finite "
                "and the divisor non-zero"
            )

    def out_of_range(self, pixels: np.ndarray) -> str | None:
        """Why ``pixels`` (one raw image) are not what the model was trained on (values
        outside :attr:`pixel_range`, e.g. a 12-bit image given to a model of 8-bit images),
        or None."""
        if self.pixel_range is None or pixels.size == 0:
            return None
        low, high = self.pixel_range
        lo, hi = float(np.min(pixels)), float(np.max(pixels))
        if lo < low or hi > high:
            return (
                f"pixel values {lo:g} to {hi:g} lie outside the range the model was trained "
                f"on ({low:g} to {high:g}); window or rescale the images to it first"
            )
        return None

    @property
    def shape(self) -> tuple[int, int, int]:
        """The model's input shape ``(channels, rows, columns)``."""
        return (self.channels, *self.size)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """``(n, rows, columns)`` grey images (already of :attr:`size`) as the model's float32
        input ``(n, channels, rows, columns)`` (a grey image repeated over the channels)."""
        arr = np.asarray(images)
        if arr.ndim != 3 or tuple(arr.shape[1:]) != self.size:
            raise ConfigError(f"images of shape {arr.shape}, expected (n, {self.size[0]}, "
                              f"{self.size[1]})")  # fmt: skip
        out = (arr.astype(np.float32) - np.float32(self.offset)) / np.float32(self.divisor)
        out = out[:, None, :, :]
        if self.channels > 1:
            out = np.repeat(out, self.channels, axis=1)
        return np.ascontiguousarray(out, dtype=np.float32)

    def to_json(self) -> dict[str, Any]:
        intensity: dict[str, Any] = {"offset": float(self.offset), "divisor": float(self.divisor)}
        if self.pixel_range is not None:
            intensity["range"] = [float(v) for v in self.pixel_range]
        return {
            "size": [int(v) for v in self.size],
            "channels": int(self.channels),
            "intensity": intensity,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ImageInput:
        """The input :meth:`to_json` wrote.

        Raises
        ------
        ConfigError
            A missing or malformed field (named).
        """
        try:
            intensity = value["intensity"]
            size = tuple(int(v) for v in value["size"])
            bounds = intensity.get("range")
            return cls(
                (size[0], size[1]) if len(size) == 2 else (0, 0),
                int(value.get("channels", 1)),
                float(intensity["offset"]),
                float(intensity["divisor"]),
                None if bounds is None else (float(bounds[0]), float(bounds[1])),
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise ConfigError(f"image input {dict(value)!r} is malformed: {err!r}") from None


#: PneumoniaMNIST (MedMNIST v2): 28x28 8-bit grey images divided by 255.
PNEUMONIAMNIST_INPUT = ImageInput(
    size=(28, 28), channels=1, offset=0.0, divisor=255.0, pixel_range=(0.0, 255.0)
)

_BY_DATASET = {"pneumoniamnist": PNEUMONIAMNIST_INPUT}


def image_input_of(dataset: str | None) -> ImageInput | None:
    """The image input of the built-in dataset ``dataset`` (``None`` when it records none)."""
    return _BY_DATASET.get(str(dataset)) if dataset is not None else None
