"""A study file's ``privacy.dp`` settings as plain data.

``privacy.dp`` in a study file::

    privacy:
      mode: open
      dp:
        delta: 1.0e-5
        accountant: rdp              # rdp | pld (how epsilon is reported)
        noise_multiplier: 1.0        # central DP at the coordinator (user-level) ...
        # target_epsilon: 3.0        # ... or the epsilon all rounds together may spend
        clip_norm: 0.5               # fixed clipping, or:
        # adaptive: {initial_clip_norm: 0.5, target_quantile: 0.5, count_noise_std: 1.0}
        # noise_seed: 1              # simulation only (default: OS entropy every round)
        local_dp_sgd:                # sample-level DP-SGD inside each site's training
          target_epsilon: 1.0        # (or noise_multiplier), over all rounds
          max_grad_norm: 1.0

What these settings build (aggregation layers, site training config, accounting) is
:mod:`fedcare.privacy.study`'s.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AdaptiveClipSpec", "DpSgdSettings", "DpSpec"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_of(a: Any, b: Any, names: str) -> None:
    if a is not None and b is not None:
        raise ValueError(f"give {names}, not both")


class AdaptiveClipSpec(_Strict):
    initial_clip_norm: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    target_quantile: float = Field(default=0.5, gt=0, lt=1)
    learning_rate: float = Field(default=0.2, gt=0, allow_inf_nan=False)
    count_noise_std: float = Field(default=1.0, gt=0, allow_inf_nan=False)


class DpSgdSettings(_Strict):
    noise_multiplier: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    target_epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_grad_norm: float = Field(default=1.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _exactly_one(self) -> DpSgdSettings:
        _one_of(self.noise_multiplier, self.target_epsilon, "noise_multiplier or target_epsilon")
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError("give noise_multiplier or target_epsilon")
        return self


class DpSpec(_Strict):
    """``privacy.dp``: central DP layers and/or local DP-SGD, and how epsilon is reported."""

    delta: float = Field(default=1e-5, gt=0, lt=1)
    accountant: Literal["rdp", "pld"] = "rdp"
    noise_multiplier: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    target_epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    clip_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    adaptive: AdaptiveClipSpec | None = None
    local_dp_sgd: DpSgdSettings | None = None
    #: Seed of the coordinator's noise, for reproducible simulations only. None (default):
    #: fresh OS entropy every round, as deployment needs -- a seed in the study file would
    #: let anyone who reads it subtract the noise.
    noise_seed: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> DpSpec:
        _one_of(self.noise_multiplier, self.target_epsilon, "noise_multiplier or target_epsilon")
        _one_of(self.clip_norm, self.adaptive, "clip_norm or adaptive")
        if self.central and self.clip_norm is None and self.adaptive is None:
            raise ValueError("central DP needs clip_norm or adaptive")
        if not self.central and (self.clip_norm is not None or self.adaptive is not None):
            raise ValueError("clip_norm/adaptive need noise_multiplier or target_epsilon")
        return self

    @property
    def central(self) -> bool:
        """Whether the coordinator adds noise (central DP layers)."""
        return self.noise_multiplier is not None or self.target_epsilon is not None
