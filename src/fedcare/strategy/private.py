"""Privacy mode ``private``: the settings it needs, its ``min_sites`` and its round event.

A study in mode ``private`` names its DP settings in ``privacy.dp``::

    privacy:
      mode: private
      epsilon: 3.0              # optional: the budget the guard enforces before every round
      dp:                       # (fedcare.privacy.guard; 10 rounds at 5.0 spend 2.81)
        noise_multiplier: 5.0   # (or target_epsilon: the epsilon all rounds together spend)
        clip_norm: 0.5
        delta: 1.0e-5

The mode's composition, ``SecureSum(ValidateUpdates(PrivateSum(WeightedMean)))`` with its site
half and accounting, is :func:`fedcare.strategy.modes.private_mode`; the coordinator only sees
the noised sum. Each round is accounted as one Gaussian mechanism of multiplier ``z``
(:func:`private_round_event`), the worst case a round with ``min_sites`` contributions gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedcare.errors import ConfigError
from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.privacy.study import central_noise_multiplier
from fedcare.records.dp_spec import DpSpec

if TYPE_CHECKING:
    from fedcare.records.study import StudyConfig

__all__ = ["private_dp_spec", "private_min_sites", "private_round_event"]


def private_dp_spec(study: StudyConfig) -> DpSpec:
    """``study.privacy.dp``, checked for what mode ``private`` needs.

    Raises
    ------
    ConfigError
        Naming the missing or unsupported field: no ``privacy.dp``, no
        ``privacy.dp.noise_multiplier``/``target_epsilon``, ``privacy.dp.adaptive``, or
        ``aggregation`` layers (they would need each update).
    """
    where = f"study {study.name!r} (privacy mode 'private')"
    dp = study.privacy.dp
    if dp is None:
        raise ConfigError(
            f"{where}: missing field privacy.dp (give noise_multiplier or target_epsilon, "
            "clip_norm and delta)"
        )
    if not dp.central:
        raise ConfigError(
            f"{where}: missing field privacy.dp.noise_multiplier (or privacy.dp.target_epsilon); "
            "the sites' noise needs one"
        )
    if dp.adaptive is not None or dp.clip_norm is None:
        raise ConfigError(
            f"{where}: privacy.dp.adaptive is not supported; give a fixed privacy.dp.clip_norm"
        )
    if study.aggregation:
        raise ConfigError(
            f"{where}: field aggregation must be empty; robust layers need each site's update, "
            "the coordinator sees only the noised sum"
        )
    return dp


def private_min_sites(study: StudyConfig) -> int:
    """``m``: the fewest contributions a round is accepted with (the per-site noise divisor).

    It is the study's ``min_sites`` whatever ``num_sites`` is: the approved plan fixes the
    sites' noise (:mod:`fedcare.strategy.site_half`), and a round with fewer contributions
    fails rather than release a sum with less noise than accounted.
    """
    return study.min_sites


def private_round_event(study: StudyConfig) -> DpEvent:
    """The DP event of one round of ``study`` (multiplier ``z`` from ``privacy.dp``)."""
    dp = private_dp_spec(study)
    return DpEvent(central_noise_multiplier(dp, study.rounds))
