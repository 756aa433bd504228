"""The ``monitoring:`` section of a study: thresholds for the model once it is deployed.

A site that took a model keeps its predictions; when outcomes arrive, ``fedcare site feedback``
computes post-deployment performance, calibration and the drift of every input feature
(:mod:`fedcare.inference.feedback`). The thresholds declared here travel in the model bundle
(``bundle.json``'s ``monitoring``); each one crossed is an alert in the site's
``monitoring.json``, and any alert makes the site write a *proposed* continuous-learning study
(fine-tuning from the deployed version) for the study's lead to submit. Nothing is submitted
automatically. Without thresholds no alert fires (drift is still reported with the conventional
0.1 / 0.25 population stability index bands).

```yaml
monitoring:
  min_auroc: 0.7
  max_psi: 0.25
  calibration_slope: [0.8, 1.25]
  min_outcomes: 50
```
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MonitoringSpec"]


class MonitoringSpec(BaseModel):
    """Alert thresholds of a deployed model (see the module docstring); ``None``: no alert."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Alert when the post-deployment AUROC is below this (binary tasks).
    min_auroc: float | None = Field(default=None, gt=0, lt=1)
    #: Alert when an input feature's (or the score's) population stability index is above this.
    max_psi: float | None = Field(default=None, gt=0)
    #: Alert when the calibration slope is outside ``[low, high]`` (binary tasks).
    calibration_slope: tuple[float, float] | None = None
    #: Performance and calibration alerts wait for this many outcomes matched to predictions.
    min_outcomes: int = Field(default=50, ge=1)
    #: Rounds of the proposed fine-tuning study (default: half the study's, at least 1).
    update_rounds: int | None = Field(default=None, ge=1)

    @field_validator("calibration_slope")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 < value[0] < value[1]:
            raise ValueError(
                f"calibration_slope must be [low, high] with 0 < low < high, got {value}"
            )
        return value
