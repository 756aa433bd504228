"""The site half of a study, as its approved plan fixes it: local training and the release layers.

A data steward approves a plan (:mod:`fedcare.records.plan`); a site must then do exactly what
that plan says and nothing a coordinator adds beside it. Two parts of the plan decide what a
``fit`` task does on the data and what leaves the site:

* ``training``: the full local-training config the strategy sends
  (:func:`site_train_config`: the study's recipe, the strategy's local ``algorithm`` and
  ``prox_mu``, SCAFFOLD's local optimizer, the DP-SGD keys of ``privacy.dp.local_dp_sgd``);
* ``site_half``: the parameters of every layer applied to the update before it leaves
  (:func:`site_half_of_study`, composed per mode in :mod:`fedcare.strategy.modes`): the
  norm-bound clip, the distributed DP noise (noise multiplier, clip norm and the number of
  sites the noise is split over), the secure aggregation spec, the encryption spec, and the
  update compression (present only when the study compresses, so older plans hash as before).

:func:`site_pipeline_for` derives the task pipeline spec from a plan. The driver checks that
the pipeline its aggregator sends equals it (:func:`check_strategy_matches_plan`), so simulation
and deployment send the same bytes; a site derives it from the approved plan and refuses a task
whose pipeline differs (:func:`pipeline_differences`). The per-task values that may vary are
only :data:`PER_TASK_KEYS` (the task seed and the secure-aggregation stage fields) and the HE key
fingerprint, which the site checks against its own key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fedcare.aggregation.compression import SPEC_KEY as COMPRESS_KEY
from fedcare.aggregation.distributed_dp import SPEC_KEY as NOISE_KEY
from fedcare.aggregation.distributed_dp import SPEC_VERSION as NOISE_VERSION
from fedcare.aggregation.norm_bound import SPEC_KEY as CLIP_KEY
from fedcare.aggregation.norm_bound import SPEC_VERSION as CLIP_VERSION
from fedcare.errors import ConfigError
from fedcare.privacy.mechanisms import check_positive, noise_std
from fedcare.privacy.study import dp_sgd_train_config
from fedcare.secure.secagg.messages import HEADER_KEY, STAGE_KEY
from fedcare.strategy.compression import compression_pipeline, compression_summary
from fedcare.strategy.modes import HE_KEY, RELEASE_LAYERS, SECAGG_KEY, SITE_HALF_KEYS, site_half_of

if TYPE_CHECKING:
    from fedcare.records.plan import TrainingPlan
    from fedcare.records.study import StudyConfig

__all__ = [
    "HE_KEY",
    "PER_TASK_KEYS",
    "SECAGG_KEY",
    "SITE_HALF_KEYS",
    "check_site_half",
    "check_strategy_matches_plan",
    "pipeline_differences",
    "site_half_of_study",
    "site_half_summary",
    "site_pipeline_for",
    "site_train_config",
]

#: Task config keys that vary per task and change nothing the plan fixes.
PER_TASK_KEYS = frozenset({"seed", STAGE_KEY, HEADER_KEY})


def site_train_config(study: StudyConfig) -> dict[str, Any]:
    """The local-training config every ``fit`` task of ``study`` carries (without the seed).

    It is the study's strategy's ``site_config()``: the training recipe plus DP-SGD settings,
    the local ``algorithm`` and, for FedProx, ``prox_mu``.
    """
    from fedcare.strategy.registry import build_strategy

    dp = study.privacy.dp
    dp_train = {} if dp is None else dp_sgd_train_config(dp, study.rounds)
    strategy = build_strategy(
        study.strategy.name,
        study.strategy.options,
        train={**study.training.as_config(), **dp_train},
    )
    config: dict[str, Any] = strategy.site_config()  # type: ignore[attr-defined]
    return config


def site_half_of_study(study: StudyConfig) -> dict[str, Any]:
    """The ``site_half`` of ``study``'s plan: the release layers its privacy mode composes
    (:func:`fedcare.strategy.modes.site_half_of`).

    Raises
    ------
    ConfigError
        For a privacy mode this version does not know, or mode ``private`` without its DP
        settings (naming the missing field).
    """
    return site_half_of(study)


def _entry(half: Mapping[str, Any], key: str, mode: str) -> Any:
    value = half.get(key)
    needed = RELEASE_LAYERS[mode].get(key)
    if needed and value is None:
        raise ConfigError(f"plan site_half: privacy mode {mode!r} needs a {key!r} entry")
    if needed is False and value is not None:
        raise ConfigError(f"plan site_half: privacy mode {mode!r} has no {key!r} layer")
    if value is not None and key != CLIP_KEY and not isinstance(value, Mapping):
        raise ConfigError(f"plan site_half: {key!r} must be a mapping or null, got {value!r}")
    return value


def check_site_half(mode: str, half: Mapping[str, Any]) -> None:
    """Raise ``ConfigError`` unless ``half`` is what privacy mode ``mode`` composes."""
    if mode not in RELEASE_LAYERS:
        raise ConfigError(
            f"plan: privacy mode {mode!r} is unknown; known: {sorted(RELEASE_LAYERS)}"
        )
    unknown = sorted(set(half) - set(SITE_HALF_KEYS))
    if unknown:
        raise ConfigError(f"plan site_half has unknown entries {unknown}")
    for key in SITE_HALF_KEYS:
        _entry(half, key, mode)
    if mode == "private" and half.get(CLIP_KEY) is not None:
        raise ConfigError("plan site_half: privacy mode 'private' clips in its noise layer")


def _clip_spec(bound: Any) -> dict[str, Any]:
    return {"version": CLIP_VERSION, "max_norm": check_positive("norm_bound", bound)}


def _noise_specs(noise: Mapping[str, Any]) -> dict[str, Any]:
    clip = check_positive("distributed_dp clip_norm", noise.get("clip_norm"))  # type: ignore[arg-type]
    z = noise.get("noise_multiplier")
    m = noise.get("min_sites")
    if isinstance(z, bool) or not isinstance(z, int | float):
        raise ConfigError(f"plan site_half: distributed_dp noise_multiplier is {z!r}")
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ConfigError(f"plan site_half: distributed_dp min_sites must be >= 1, got {m!r}")
    site_std = noise_std(z, clip) / math.sqrt(m)  # as PrivateSum.site_std
    return {
        CLIP_KEY: {"version": CLIP_VERSION, "max_norm": clip},
        NOISE_KEY: {"version": NOISE_VERSION, "clip_norm": clip, "site_std": site_std,
                    "min_sites": m},
    }  # fmt: skip


def site_pipeline_for(plan: TrainingPlan, *, he_fingerprint: object = None) -> dict[str, Any]:
    """The pipeline spec every ``fit`` task of ``plan`` must carry.

    ``he_fingerprint``: the federation key's fingerprint (privacy mode ``encrypted``; the
    coordinator's public context, or at a site the task's, which the site then checks against
    its own key).

    Raises
    ------
    ConfigError
        When the plan's ``site_half`` is not what its privacy mode composes, or has bad values.
    """
    half = plan.site_half
    check_site_half(plan.privacy_mode, half)
    out: dict[str, Any] = {}
    if half.get(CLIP_KEY) is not None:
        out[CLIP_KEY] = _clip_spec(half[CLIP_KEY])
    if half.get(NOISE_KEY) is not None:
        try:
            out.update(_noise_specs(half[NOISE_KEY]))
        except ConfigError as err:
            raise ConfigError(f"plan site_half: {err}") from None
    if half.get(SECAGG_KEY) is not None:
        out[SECAGG_KEY] = dict(half[SECAGG_KEY])
    if half.get(HE_KEY) is not None:
        out[HE_KEY] = {**half[HE_KEY], "fingerprint": he_fingerprint}
    if half.get(COMPRESS_KEY) is not None:
        out[COMPRESS_KEY] = compression_pipeline(half[COMPRESS_KEY])
    return out


def pipeline_differences(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """What ``actual`` changes against ``expected``, one readable line per layer."""
    out = []
    for key in sorted(set(expected) | set(actual)):
        want, got = expected.get(key), actual.get(key)
        if want == got:
            continue
        if got is None:
            out.append(f"{key} missing (plan: {want!r})")
        elif want is None:
            out.append(f"{key} added ({got!r}; the plan has no {key} layer)")
        else:
            out.append(f"{key} is {got!r} (plan: {want!r})")
    return out


def site_half_summary(half: Mapping[str, Any]) -> str:
    """One line for the steward: what is applied to an update before it leaves the site."""
    parts = []
    if half.get(CLIP_KEY) is not None:
        parts.append(f"clip to norm {half[CLIP_KEY]:g}")
    noise = half.get(NOISE_KEY)
    if isinstance(noise, Mapping):
        parts.append(
            f"clip to norm {noise.get('clip_norm')} + Gaussian noise (multiplier "
            f"{noise.get('noise_multiplier')}, split over {noise.get('min_sites')} sites)"
        )
    secagg = half.get(SECAGG_KEY)
    if isinstance(secagg, Mapping):
        chosen = "".join(
            f", {key} {secagg[key]}" for key in ("neighbours", "threshold") if key in secagg
        )
        parts.append(
            f"masked (secure aggregation v{secagg.get('version')}, clip {secagg.get('clip')}, "
            f"{secagg.get('bits')} bits{chosen})"
        )
    he = half.get(HE_KEY)
    if isinstance(he, Mapping):
        parts.append(f"encrypted ({he.get('scheme')} v{he.get('version')})")
    compression = half.get(COMPRESS_KEY)
    if isinstance(compression, Mapping):
        parts.append(compression_summary(compression))
    return "; ".join(parts) or "none (the update leaves as trained)"


def check_strategy_matches_plan(strategy: Any, plan: TrainingPlan) -> None:
    """Raise ``ConfigError`` when what ``strategy`` sends to sites is not what ``plan`` fixes
    (its fit config without per-task keys, or its aggregator's site pipeline)."""
    site_config = getattr(strategy, "site_config", None)
    if callable(site_config):
        sent = dict(site_config())
        if sent != dict(plan.training):
            raise ConfigError(
                f"study {plan.study!r}: the strategy sends fit config {sent} but the plan fixes "
                f"{dict(plan.training)}"
            )
    aggregator = getattr(strategy, "aggregator", None)
    spec = dict(aggregator.site_spec()) if aggregator is not None else {}
    he = spec.get(HE_KEY)
    expected = site_pipeline_for(
        plan, he_fingerprint=he.get("fingerprint") if isinstance(he, Mapping) else None
    )
    diffs = pipeline_differences(expected, spec)
    if diffs:
        raise ConfigError(
            f"study {plan.study!r}: the aggregation pipeline's site half differs from the "
            f"plan's: {'; '.join(diffs)}"
        )
