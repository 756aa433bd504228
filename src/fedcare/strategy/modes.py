"""Privacy modes as preset compositions: one module, one short function per mode.

:func:`mode_composition` gives a study's :class:`ModeComposition`: the server aggregator, the
protocol layer around it (secure sum, encrypted sum, or none), the plan's site half (what each
site applies to its update before it leaves), the DP-SGD entries of every fit task, the fewest
contributions a round takes, and the accounting plan (the DP events one round adds). Read each
mode top to bottom in :func:`open_mode`, :func:`secure_mode`, :func:`private_mode` and
:func:`encrypted_mode`; :func:`site_half_of` is the part a plan needs (no server checks, keys).

Why in ``strategy``: a mode composes aggregation layers, the secure layers and the privacy
settings, siblings in the core's middle layer; only a layer above all three may import them
all. The mechanisms stay in their packages; this module only decides which a mode stacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedcare.aggregation.base import Aggregator
from fedcare.aggregation.compression import SPEC_KEY as COMPRESS_KEY
from fedcare.aggregation.distributed_dp import SPEC_KEY as NOISE_KEY
from fedcare.aggregation.mean import WeightedMean
from fedcare.aggregation.norm_bound import SPEC_KEY as CLIP_KEY
from fedcare.aggregation.presets import build_aggregator, needs_each_update
from fedcare.aggregation.private_sum import PrivateSum
from fedcare.aggregation.validate import ValidateUpdates
from fedcare.errors import ConfigError
from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.privacy.study import (
    DpSpec,
    build_dp_aggregator,
    central_noise_multiplier,
    dp_sgd_train_config,
    expected_sites,
)
from fedcare.secure.he.base import HEBackend
from fedcare.secure.he.layer import DEFAULT_WEIGHT_UNIT, with_encrypted_sum
from fedcare.secure.he.layer import SPEC_VERSION as HE_VERSION
from fedcare.secure.secagg.graph import check_settings
from fedcare.secure.secagg.layer import SPEC_VERSION as SECAGG_VERSION
from fedcare.secure.secagg.layer import with_secure_sum
from fedcare.secure.secagg.quantize import QuantSpec
from fedcare.strategy.compression import check_compression, compression_half, with_compression
from fedcare.strategy.private import private_dp_spec, private_min_sites

if TYPE_CHECKING:
    from fedcare.records.study import StudyConfig
    from fedcare.strategy.base import Strategy

__all__ = [
    "AVAILABLE_PRIVACY_MODES",
    "HE_KEY",
    "RELEASE_LAYERS",
    "SECAGG_KEY",
    "SITE_HALF_KEYS",
    "AccountingPlan",
    "ModeComposition",
    "baseline_composition",
    "check_privacy_mode",
    "encrypted_mode",
    "mode_composition",
    "open_mode",
    "private_mode",
    "secure_mode",
    "site_half_of",
    "study_dp_parts",
]

#: Privacy modes this version can run (the others come with their layers).
AVAILABLE_PRIVACY_MODES: tuple[str, ...] = ("open", "secure", "private", "encrypted")
SECAGG_KEY, HE_KEY = "secagg", "he"
#: The entries of a plan's ``site_half`` (a missing entry means the layer is off).
SITE_HALF_KEYS = (CLIP_KEY, NOISE_KEY, SECAGG_KEY, HE_KEY, COMPRESS_KEY)
#: Which release layers each privacy mode needs (True) or forbids (False).
RELEASE_LAYERS: dict[str, dict[str, bool]] = {
    "open": {NOISE_KEY: False, SECAGG_KEY: False, HE_KEY: False},
    "secure": {NOISE_KEY: False, SECAGG_KEY: True, HE_KEY: False, COMPRESS_KEY: False},
    "private": {NOISE_KEY: True, SECAGG_KEY: True, HE_KEY: False, COMPRESS_KEY: False},
    "encrypted": {NOISE_KEY: False, SECAGG_KEY: False, HE_KEY: True, COMPRESS_KEY: False},
}

#: The outermost layer: a copy of the strategy with its aggregator wrapped (or it, as is).
ProtocolLayer = Callable[["Strategy"], "Strategy"]


def _as_is(strategy: Strategy) -> Strategy:
    return strategy


@dataclass(frozen=True)
class AccountingPlan:
    """The study-level DP events one round adds, planned before it runs (empty: none planned;
    adaptive clipping's depend on the round and come in its measurements), and the ``delta``
    and ``accountant`` they compose into epsilon with (None without ``privacy.dp``)."""

    round_events: tuple[DpEvent, ...] = ()
    delta: float | None = None
    accountant: str | None = None


@dataclass(frozen=True)
class ModeComposition:
    """One privacy mode, composed for one study."""

    mode: str
    #: The server half inside the protocol layer (``ValidateUpdates`` outermost).
    aggregator: Aggregator[Any]
    #: The outermost server layer, applied to the strategy built around :attr:`aggregator`.
    protocol: ProtocolLayer = _as_is
    #: The plan's ``site_half``: every release layer's parameters (None: the layer is off).
    site_half: Mapping[str, Any] = field(default_factory=dict)
    #: Task config entries of every fit task (DP-SGD at the sites).
    train: Mapping[str, float | int] = field(default_factory=dict)
    #: The fewest contributions a round is accepted with.
    min_sites: int = 1
    accounting: AccountingPlan = AccountingPlan()


# -- checks a mode makes of a study ------------------------------------------------------------


def check_privacy_mode(study: StudyConfig) -> None:
    """Raise ``ConfigError`` when this version cannot run the study's privacy mode (or, for
    ``private``, its ``privacy.dp`` settings are missing)."""
    mode = study.privacy.mode
    if mode not in AVAILABLE_PRIVACY_MODES:
        raise ConfigError(
            f"study {study.name!r}: privacy mode {mode!r} is not available in this version "
            f"(available: {', '.join(AVAILABLE_PRIVACY_MODES)})"
        )
    if mode == "private":  # its DP settings, checked at submit (names the missing field)
        private_dp_spec(study)
    check_compression(study)  # only mode 'open' sends updates as arrays


def study_dp_parts(
    study: StudyConfig, num_sites: int
) -> tuple[Aggregator[Any] | None, dict[str, float | int]]:
    """``(central DP aggregator or None, DP-SGD task config)`` for ``study``'s ``privacy.dp``
    (noise from ``privacy.dp.noise_seed``, OS entropy when unset). Raises ``ConfigError`` for
    central DP with ``aggregation`` layers or in a mode other than ``open``."""
    dp = study.privacy.dp
    if dp is None:
        return None, {}
    aggregator: Aggregator[Any] | None = None
    if dp.central:
        _check_central(study)
        m = expected_sites(num_sites, study.fraction, study.min_sites)
        aggregator = build_dp_aggregator(
            dp, rounds=study.rounds, expected_sites=m, seed=dp.noise_seed
        )
    return aggregator, dp_sgd_train_config(dp, study.rounds)


def _check_central(study: StudyConfig) -> None:
    if study.aggregation:
        raise ConfigError(
            f"study {study.name!r}: central DP (privacy.dp.noise_multiplier/target_epsilon) "
            "cannot combine with aggregation layers yet; its layer clips by itself"
        )
    mode = study.privacy.mode
    if mode != "open":
        raise ConfigError(
            f"study {study.name!r}: central DP runs at a trusted coordinator (mode 'open'), "
            f"not mode {mode!r}; mode 'private' adds the noise at the sites instead, and "
            "privacy.dp.local_dp_sgd works in any mode"
        )


def _capped_min_sites(study: StudyConfig, num_sites: int) -> int:
    return max(1, min(study.min_sites, num_sites))


def _no_each_update(study: StudyConfig, mode: str, why: str) -> None:
    needs_each = needs_each_update(study.aggregation)
    if needs_each:  # robust means need each update; the coordinator sees only a sum
        raise ConfigError(
            f"study {study.name!r}: privacy mode {mode!r} cannot combine with robust "
            f"aggregation layer(s) {needs_each}, which need each site's update{why}"
        )


# -- the layers a mode stacks --------------------------------------------------------------------


def _site_half(
    study: StudyConfig, *, noise: Any = None, secagg: Any = None, he: Any = None
) -> dict[str, Any]:
    """A plan's ``site_half``: the study's norm-bound clip plus the given release layers."""
    bounds = [layer.max_norm for layer in study.aggregation if layer.name == "norm_bound"]
    clip = float(min(bounds)) if bounds else None
    return {CLIP_KEY: clip, NOISE_KEY: noise, SECAGG_KEY: secagg, HE_KEY: he}


def _secagg_half(study: StudyConfig) -> dict[str, Any]:
    """Masking as sites do it, with ``privacy.secagg`` only when set (else the plan as before)."""
    quant, spec = QuantSpec(), study.privacy.secagg
    chosen = {} if spec is None else spec.model_dump(exclude_none=True)
    return {"version": SECAGG_VERSION, "clip": quant.clip, "bits": quant.bits, **chosen}


def _he_half() -> dict[str, Any]:
    return {"version": HE_VERSION, "scheme": "ckks", "weight_unit": DEFAULT_WEIGHT_UNIT}


def _noise_half(study: StudyConfig) -> dict[str, Any]:
    dp = private_dp_spec(study)
    assert dp.clip_norm is not None
    return {
        "noise_multiplier": central_noise_multiplier(dp, study.rounds),
        "clip_norm": float(dp.clip_norm),
        "min_sites": private_min_sites(study),
    }


_SECURE_ALLOWS = "; norm_bound (clipped at the site before masking) is the robust layer it allows"


def _secure_sum(study: StudyConfig, num_sites: int) -> ProtocolLayer:
    """SecureSum outermost: sites mask ``[w * delta, w]``; the coordinator unmasks the sum.
    The study's ``privacy.secagg`` is checked against ``num_sites`` now (ConfigError)."""
    options = study.privacy.secagg.options() if study.privacy.secagg is not None else {}
    if num_sites >= 2:  # fewer: the round itself refuses, naming the count
        check_settings(num_sites, options.get("degree"), options.get("threshold"))

    def wrap(strategy: Strategy) -> Strategy:
        _no_each_update(study, "secure", _SECURE_ALLOWS)
        out: Strategy = with_secure_sum(strategy, options)
        return out

    return wrap


def _encrypted_sum(study: StudyConfig, context: HEBackend | None) -> ProtocolLayer:
    """EncryptedSum outermost: sites send CKKS ciphertexts and decrypt only the sum. ``context``:
    the coordinator's PUBLIC one; ``None``: the simulated federation's (simulation only)."""

    def wrap(strategy: Strategy) -> Strategy:
        _no_each_update(study, "encrypted", " in plaintext")
        public = context
        if public is None:
            from fedcare.secure.he.ckks import CKKSBackend
            from fedcare.secure.he.keys import simulation_keys

            public = CKKSBackend.public_from_bytes(simulation_keys()[1])
        out: Strategy = with_encrypted_sum(strategy, {}, public)
        return out

    return wrap


def _central_accounting(dp: DpSpec | None, rounds: int) -> AccountingPlan:
    if dp is None:
        return AccountingPlan()
    planned = dp.central and dp.adaptive is None  # adaptive: events depend on the round
    events = (DpEvent(central_noise_multiplier(dp, rounds)),) if planned else ()
    return AccountingPlan(events, dp.delta, dp.accountant)


def _open_half(study: StudyConfig) -> dict[str, Any]:
    return _site_half(study)  # only the norm-bound clip, if the stack has one


def _secure_half(study: StudyConfig) -> dict[str, Any]:
    return _site_half(study, secagg=_secagg_half(study))


def _private_half(study: StudyConfig) -> dict[str, Any]:
    return _site_half(study, noise=_noise_half(study), secagg=_secagg_half(study))


def _encrypted_half(study: StudyConfig) -> dict[str, Any]:
    return _site_half(study, he=_he_half())


_SITE_HALVES: dict[str, Callable[[StudyConfig], dict[str, Any]]] = {
    "open": _open_half,
    "secure": _secure_half,
    "private": _private_half,
    "encrypted": _encrypted_half,
}


# -- the modes -----------------------------------------------------------------------------------


def open_mode(study: StudyConfig, num_sites: int, he_context: Any = None) -> ModeComposition:
    """``open``: the coordinator sees each (validated) update; robust layers or central DP;
    compressed updates are decoded (and malformed ones rejected) before anything else."""
    aggregator = build_aggregator(study.aggregation)  # ValidateUpdates(stack or weighted mean)
    central, dp_sgd = study_dp_parts(study, num_sites)  # clip + Gaussian noise at the server
    return ModeComposition(
        "open",
        aggregator=with_compression(aggregator if central is None else central, study),
        site_half=_open_half(study),
        train=dp_sgd,
        min_sites=_capped_min_sites(study, num_sites),
        accounting=_central_accounting(study.privacy.dp, study.rounds),
    )


def secure_mode(study: StudyConfig, num_sites: int, he_context: Any = None) -> ModeComposition:
    """``secure``: sites clip (norm_bound) and mask; the coordinator sees only the sum."""
    aggregator = build_aggregator(study.aggregation)
    _, dp_sgd = study_dp_parts(study, num_sites)  # local DP-SGD only; central DP refused
    return ModeComposition(
        "secure",
        aggregator=aggregator,
        protocol=_secure_sum(study, num_sites),
        site_half=_secure_half(study),  # the norm-bound clip, then masking
        train=dp_sgd,
        min_sites=_capped_min_sites(study, num_sites),
        accounting=_central_accounting(study.privacy.dp, study.rounds),
    )


def private_mode(study: StudyConfig, num_sites: int, he_context: Any = None) -> ModeComposition:
    """``private``: sites clip and add their share of Gaussian noise, then mask; the
    coordinator sees only the noised sum. A round is one Gaussian mechanism of multiplier
    ``z`` (the worst case, ``min_sites`` contributions), whatever ``num_sites`` is."""
    dp = private_dp_spec(study)
    assert dp.clip_norm is not None
    z = central_noise_multiplier(dp, study.rounds)
    m = private_min_sites(study)
    noise = PrivateSum(WeightedMean(), noise_multiplier=z, clip_norm=dp.clip_norm, min_sites=m)
    return ModeComposition(
        "private",
        aggregator=ValidateUpdates(noise),
        protocol=_secure_sum(study, num_sites),
        site_half=_private_half(study),  # clip + the site's noise share, then masking
        train=dp_sgd_train_config(dp, study.rounds),
        min_sites=m,
        accounting=AccountingPlan((DpEvent(z),), dp.delta, dp.accountant),
    )


def encrypted_mode(
    study: StudyConfig, num_sites: int, he_context: HEBackend | None = None
) -> ModeComposition:
    """``encrypted``: sites encrypt (CKKS); the coordinator sums ciphertexts with the public
    key and a contributing site decrypts only the sum."""
    aggregator = build_aggregator(study.aggregation)
    _, dp_sgd = study_dp_parts(study, num_sites)  # local DP-SGD only; central DP refused
    return ModeComposition(
        "encrypted",
        aggregator=aggregator,
        protocol=_encrypted_sum(study, he_context),
        site_half=_encrypted_half(study),  # the norm-bound clip, then encryption
        train=dp_sgd,
        min_sites=_capped_min_sites(study, num_sites),
        accounting=_central_accounting(study.privacy.dp, study.rounds),
    )


def baseline_composition(study: StudyConfig, num_sites: int) -> ModeComposition:
    """How a baseline (one site, or pooled data) trains: validation around a weighted mean,
    no release layer, nothing accounted."""
    return ModeComposition(
        study.privacy.mode,
        aggregator=build_aggregator([]),
        min_sites=_capped_min_sites(study, num_sites),
    )


_MODES: dict[str, Callable[[StudyConfig, int, Any], ModeComposition]] = {
    "open": open_mode,
    "secure": secure_mode,
    "private": private_mode,
    "encrypted": encrypted_mode,
}


def mode_composition(
    study: StudyConfig, num_sites: int, *, he_context: HEBackend | None = None
) -> ModeComposition:
    """The composition of ``study``'s privacy mode for a federation of ``num_sites``.

    ``he_context``: the coordinator's public HE context (mode ``encrypted``; ``None`` in
    simulation). Checks that need the strategy (robust layers under a sum, a strategy that
    cannot aggregate a sum) run when :attr:`ModeComposition.protocol` is applied.

    Raises
    ------
    ConfigError
        For a mode this version cannot run, or settings the mode cannot combine (naming them).
    """
    check_privacy_mode(study)
    return _MODES[study.privacy.mode](study, num_sites, he_context)


def site_half_of(study: StudyConfig) -> dict[str, Any]:
    """The ``site_half`` of ``study``'s plan: the release layers its privacy mode composes.

    Raises
    ------
    ConfigError
        For a privacy mode this version does not know, or mode ``private`` without its DP
        settings (naming the missing field).
    """
    mode = study.privacy.mode
    if mode not in _SITE_HALVES:
        raise ConfigError(f"study {study.name!r}: privacy mode {mode!r} is unknown")
    return {**_SITE_HALVES[mode](study), **compression_half(study)}  # compression: if set
