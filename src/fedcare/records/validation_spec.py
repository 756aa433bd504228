"""The ``validation:`` section of a study: what the clinical validation report computes.

After the last round every site evaluates the final model on its test rows and, besides the
study's metrics, returns a *site summary* (:mod:`fedcare.evaluation.validation`): prevalence,
the confusion matrix at the decision threshold, metrics with bootstrap confidence intervals,
binned calibration and score counts, subgroup cells (small cells withheld by the site's
``min_cell``), and for linear models the information matrix behind coefficient intervals. All of
them are aggregates over the site's rows; the section is part of the training plan, so a steward
approves exactly these outputs.

``validation: leave_one_site_out`` is short for ``{leave_one_site_out: true}``.

``saliency`` is the one part that sends nothing: for image models (torch, inputs of rank >= 2)
each site draws saliency maps of a few of its own test images into a report that stays at the
site (:mod:`fedcare.evaluation.saliency`); ``saliency: false`` turns it off.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["SaliencySpec", "SubgroupSpec", "ValidationSpec"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubgroupSpec(_Strict):
    """One subgroup variable: a feature's raw value (before imputation and scaling)."""

    feature: str = Field(min_length=1, max_length=128)
    #: Increasing numeric cut points: ``[50, 60]`` makes bands ``<50``, ``50-60``, ``>=60``.
    #: Without bands each distinct value is a group.
    bands: list[float] | None = Field(default=None, min_length=1, max_length=20)
    #: The label in the report (default: the feature's name).
    name: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("bands")
    @classmethod
    def _increasing(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError(f"bands must be strictly increasing, got {value}")
        return value

    @property
    def label(self) -> str:
        return self.name or self.feature


class SaliencySpec(_Strict):
    """Saliency maps of image models, written only into the site's own report."""

    #: Test images per site: half the highest-scored positives, half the lowest-scored
    #: negatives (binary tasks), else a seeded random sample.
    images: int = Field(default=8, ge=1, le=32)
    #: ``integrated_gradients`` (from a black image) or the plain input ``gradient``.
    method: Literal["integrated_gradients", "gradient"] = "integrated_gradients"
    #: Integrated-gradients steps (midpoint Riemann sum along the straight path).
    steps: int = Field(default=32, ge=4, le=256)


class ValidationSpec(_Strict):
    """What the final evaluation reports (see the module docstring)."""

    #: The final evaluation returns each site's clinical validation summary.
    report: bool = True
    #: Decision threshold of binary tasks (confusion matrix, sensitivity, fairness gaps).
    threshold: float = Field(default=0.5, gt=0, lt=1)
    #: Reliability-diagram bins, equal width on [0, 1] (scikit-learn's ``uniform`` rule).
    bins: int = Field(default=10, ge=2, le=100)
    #: Score histogram bins for the ROC and precision-recall curves, net benefit and the pooled
    #: AUROC; a multiple of ``bins``.
    curve_bins: int = Field(default=100, ge=2, le=1000)
    #: Bootstrap resamples at each site for its confidence intervals (0: no intervals).
    bootstrap: int = Field(default=200, ge=0, le=2000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    subgroups: list[SubgroupSpec] = Field(default_factory=list, max_length=10)
    #: Federated permutation importance: each site returns mean metric drops per feature.
    importance: bool = False
    importance_repeats: int = Field(default=5, ge=1, le=50)
    #: Simulation: train on all sites but one, validate on the held-out one, for each site.
    leave_one_site_out: bool = False
    #: Image models: saliency maps in a report kept at each site (``None``/``false``: off).
    saliency: SaliencySpec | None = Field(default_factory=SaliencySpec)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if data == "leave_one_site_out":
            return {"leave_one_site_out": True}
        if isinstance(data, dict) and isinstance(data.get("saliency"), bool):
            return {**data, "saliency": {} if data["saliency"] else None}
        return data

    @model_validator(mode="after")
    def _bins_nest(self) -> ValidationSpec:
        if self.curve_bins % self.bins:
            raise ValueError(
                f"curve_bins ({self.curve_bins}) must be a multiple of bins ({self.bins})"
            )
        labels = [s.label for s in self.subgroups]
        if len(set(labels)) != len(labels):
            raise ValueError(f"subgroup names must differ, got {labels}")
        return self
