"""A study's update compression: its plan entry, its server layer, and where it is refused.

The study's ``compression:`` section (:mod:`fedcare.records.compression_spec`) becomes

* the plan's ``site_half["compression"]`` entry (``{"method": ..., "ratio": ...}``), only when
  the study compresses: a plan without compression has no such key and keeps its hash;
* the task pipeline entry a site derives from that plan (:func:`compression_pipeline`);
* the outermost server layer :class:`~fedcare.aggregation.compression.Decompress` around the
  study's aggregator (:func:`with_compression`), whose site spec equals that pipeline entry.

Privacy modes other than ``open`` refuse it (:func:`check_compression`): ``secure`` and
``private`` mask a fixed-point encoding of every update (secure aggregation quantizes to its
own bits), ``encrypted`` sends CKKS ciphertexts; neither can carry a compressed update, and
fp16 or bf16 before masking would only lose precision without saving a byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fedcare.aggregation.base import Aggregator
from fedcare.aggregation.compression import ERROR_FEEDBACK, Decompress, compression_spec
from fedcare.errors import ConfigError

if TYPE_CHECKING:
    from fedcare.records.study import StudyConfig

__all__ = [
    "check_compression",
    "compression_half",
    "compression_pipeline",
    "compression_summary",
    "with_compression",
]

_WHY = {
    "secure": "secure aggregation masks a fixed-point encoding of every update",
    "private": "secure aggregation masks a fixed-point encoding of every noised update",
    "encrypted": "sites send CKKS ciphertexts of their updates",
}


def check_compression(study: StudyConfig) -> None:
    """Raise ``ConfigError`` when ``study`` compresses in a privacy mode that cannot."""
    spec = getattr(study, "compression", None)
    mode = study.privacy.mode
    if spec is None or not spec.active or mode == "open":
        return
    raise ConfigError(
        f"study {study.name!r}: compression {spec.method!r} works in privacy mode 'open' only; "
        f"in mode {mode!r} {_WHY.get(mode, 'updates are not sent as arrays')}, which a "
        "compressed update cannot be (set compression.method to 'none')"
    )


def compression_half(study: StudyConfig) -> dict[str, Any]:
    """The plan's ``site_half`` entry of ``study``'s compression (``{}`` without any)."""
    spec = getattr(study, "compression", None)
    if spec is None or not spec.active:
        return {}
    check_compression(study)
    entry: dict[str, Any] = {"method": spec.method}
    if spec.ratio is not None:
        entry["ratio"] = float(spec.ratio)
    return {"compression": entry}


def compression_pipeline(entry: Any) -> dict[str, Any]:
    """The task pipeline entry of a plan's ``site_half["compression"]`` entry.

    Raises
    ------
    ConfigError
        For an entry that is not a mapping, or an unknown method or bad ratio.
    """
    if not isinstance(entry, Mapping):
        raise ConfigError(f"plan site_half: 'compression' must be a mapping, got {entry!r}")
    unknown = sorted(set(entry) - {"method", "ratio"})
    if unknown:
        raise ConfigError(f"plan site_half: 'compression' has unknown keys {unknown}")
    try:
        return compression_spec(str(entry.get("method")), entry.get("ratio"))
    except ConfigError as err:
        raise ConfigError(f"plan site_half: {err}") from None


def with_compression(aggregator: Aggregator[Any], study: StudyConfig) -> Aggregator[Any]:
    """``aggregator`` inside the study's :class:`Decompress` layer (as is, without one)."""
    half = compression_half(study).get("compression")
    if half is None:
        return aggregator
    return Decompress(aggregator, method=half["method"], ratio=half.get("ratio"))


def compression_summary(entry: Mapping[str, Any]) -> str:
    """One phrase for the steward's plan summary."""
    method = entry.get("method")
    what = {
        "fp16": "half precision (float16)",
        "bf16": "bfloat16 (float32's upper 16 bits)",
        "int8": "8-bit quantization, one scale per array",
        "topk": f"top-k: the {entry.get('ratio', 0):.0%} largest entries of each array",
    }.get(str(method), str(method))
    feedback = (
        "; what it leaves out is kept at the site (error feedback) and added next round"
        if method in ERROR_FEEDBACK
        else ""
    )
    return f"compressed: {what}{feedback}"
