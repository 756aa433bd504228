"""A study file's ``privacy.secagg`` settings: SecAgg+'s neighbour count and share threshold.

``privacy.secagg`` in a study file (modes ``secure`` and ``private``; both optional)::

    privacy:
      mode: secure
      secagg:
        neighbours: 20   # k: each site exchanges keys and shares with k others (even)
        threshold: 12    # t: shares of a site's secrets needed to reconstruct one

Unset, a round uses ``k = 2 ceil(1.5 log2 n)`` (at most ``n - 1``: then every site is every
other's neighbour) and ``t`` a strict majority of the ``k + 1`` holders of a site's shares
(:mod:`fedcare.secure.secagg.graph`). Here only what holds whatever the federation's size is
checked: ``t`` must be a strict majority of ``k + 1`` (so the coordinator can never gather
enough shares of both a site's self-mask and its mask key: two disjoint sets of ``t`` holders
do not exist) and at most ``k + 1``. The bounds that depend on the number of sites ``n``
(``k`` at least ``2 ceil(log2 n)``, even below ``n - 1``) are checked when the study's
privacy mode is built for its sites (:func:`fedcare.secure.secagg.graph.check_settings`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SecAggSpec", "majority"]


def majority(holders: int) -> int:
    """The smallest strict majority of ``holders``."""
    return holders // 2 + 1


class SecAggSpec(BaseModel):
    """SecAgg+ neighbour count (``neighbours``) and share threshold (``threshold``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    neighbours: int | None = Field(default=None, ge=2)
    threshold: int | None = Field(default=None, ge=2)

    @model_validator(mode="after")
    def _threshold_is_a_majority(self) -> SecAggSpec:
        k, t = self.neighbours, self.threshold
        if k is None or t is None:
            return self
        if t < majority(k + 1):
            raise ValueError(
                f"privacy.secagg.threshold={t} is not a strict majority of the {k + 1} holders "
                f"of a site's shares (neighbours={k} plus the site): two disjoint sets of {t} "
                f"could then reconstruct both its self-mask and its mask key and unmask its "
                f"input; use at least {majority(k + 1)}"
            )
        if t > k + 1:
            raise ValueError(
                f"privacy.secagg.threshold={t} exceeds the {k + 1} holders of a site's shares "
                f"(neighbours={k} plus the site): no secret could ever be reconstructed; use at "
                f"most {k + 1}"
            )
        return self

    def options(self) -> dict[str, int]:
        """The set values as :func:`~fedcare.secure.secagg.layer.with_secure_sum` options."""
        out = {"degree": self.neighbours, "threshold": self.threshold}
        return {k: v for k, v in out.items() if v is not None}
