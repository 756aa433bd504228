"""A study file's ``aggregation:`` list as plain data: one validated spec per layer.

A study's ``aggregation:`` list names layers outermost first, e.g.::

    aggregation:
      - {name: norm_bound, max_norm: 5.0}
      - {name: trimmed_mean, trim: 0.25}

``norm_bound`` and ``krum`` wrap what follows them; ``mean``, ``median`` and ``trimmed_mean``
combine contributions themselves and so may only come last. The specs are pydantic models, so a
study file with an unknown layer or a bad option fails on load with the field's path
(``aggregation.1.trimmed_mean.trim``). The aggregators they build are
:func:`fedcare.aggregation.presets.build_aggregator`'s.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "TERMINAL_LAYERS",
    "AggregationSpec",
    "KrumSpec",
    "LayerSpec",
    "MeanSpec",
    "MedianSpec",
    "NormBoundSpec",
    "TrimmedMeanSpec",
    "terminal_last",
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NormBoundSpec(_Spec):
    name: Literal["norm_bound"]
    max_norm: float = Field(gt=0, allow_inf_nan=False)


class KrumSpec(_Spec):
    name: Literal["krum"]
    num_byzantine: int = Field(default=1, ge=0)
    num_selected: int | None = Field(default=None, ge=1)
    outlier_threshold: float = Field(default=3.0, gt=0)


class MeanSpec(_Spec):
    name: Literal["mean"]
    weighted: bool = True


class MedianSpec(_Spec):
    name: Literal["median"]
    outlier_threshold: float = Field(default=3.0, gt=0)


class TrimmedMeanSpec(_Spec):
    name: Literal["trimmed_mean"]
    trim: float | None = Field(default=None, ge=0, lt=0.5)
    count: int | None = Field(default=None, ge=0)
    outlier_threshold: float = Field(default=3.0, gt=0)

    @model_validator(mode="after")
    def _one_of(self) -> TrimmedMeanSpec:
        if self.trim is not None and self.count is not None:
            raise ValueError(f"give trim ({self.trim}) or count ({self.count}), not both")
        return self


LayerSpec = Annotated[
    NormBoundSpec | KrumSpec | MeanSpec | MedianSpec | TrimmedMeanSpec,
    Field(discriminator="name"),
]
#: The layers that combine contributions themselves (so may only come last).
TERMINAL_LAYERS = ("mean", "median", "trimmed_mean")


def terminal_last(layers: list[Any]) -> list[Any]:
    """``layers`` unchanged; ``ValueError`` when a combining layer is not the last one."""
    for i, layer in enumerate(layers[:-1]):
        if layer.name in TERMINAL_LAYERS:
            raise ValueError(
                f"layer {i} ({layer.name!r}) combines contributions itself and must be the "
                f"last layer; {layers[i + 1].name!r} follows it"
            )
    return layers


#: The type of a study's ``aggregation:`` field.
AggregationSpec = Annotated[list[LayerSpec], AfterValidator(terminal_last)]
