"""The ``compression:`` section of a study: how each site compresses its update on the wire.

Methods (:mod:`fedcare.aggregation.compression`; the default ``none`` sends updates as
trained):

``fp16``
    Half precision (float16): half the bytes of float32 parameters.
``bf16``
    bfloat16 (float32's upper 16 bits): half the bytes, float32's range, coarser precision.
``int8``
    8-bit quantization with one float32 scale per parameter array and error feedback at the
    site: about a quarter of the bytes.
``topk``
    Top-k sparsification: the ``ratio`` share of each array's entries of largest magnitude, as
    indices and values (about ``2 * ratio`` of the bytes), with error feedback at the site.

The section is part of the training plan (its ``site_half``) when set, so the stewards approve
it with the plan; a study without it keeps the plan hash it had before compression existed.
Only privacy mode ``open`` compresses (masking and encryption send their own encodings).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DEFAULT_TOPK_RATIO", "CompressionSpec"]

DEFAULT_TOPK_RATIO = 0.1


class CompressionSpec(BaseModel):
    """How sites compress their updates (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["none", "fp16", "bf16", "int8", "topk"] = "none"
    #: ``topk`` only: the share of each array's entries sent, in (0, 1) (default 0.1).
    ratio: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _default_ratio(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("method") == "topk" and data.get("ratio") is None:
            return {**data, "ratio": DEFAULT_TOPK_RATIO}
        return data

    @model_validator(mode="after")
    def _ratio_for_topk(self) -> CompressionSpec:
        if self.method != "topk" and self.ratio is not None:
            raise ValueError(f"ratio is for method topk only (method is {self.method!r})")
        return self

    @property
    def active(self) -> bool:
        return self.method != "none"
