"""Update compression as an aggregation layer with a site half.

The site half (:func:`site_compress`) turns the update a site trained (``local - global``,
after the norm-bound clip) into its compressed wire form (:mod:`fedcare.aggregation.compress_codec`:
fp16, bf16, int8 with a per-array scale, or top-k indices and values). For ``int8`` and
``topk`` it keeps **error feedback**: what compression left out of this round's update (the
residual) is added to the next round's before compressing, so over many rounds the sum of what
a site sent tracks the sum of its true updates, off by one bounded residual. The residual never
leaves the site (:mod:`fedcare.site.compress` keeps it per study in the site's state folder).

The server half, :class:`Decompress`, is the OUTERMOST layer of a study's stack: it checks and
decodes each site's compressed reply against the parameter template before anything else sees
it, and rejects a malformed one (missing arrays, wrong dtype or shape, an index out of range,
non-finite values) for that site only, naming it in ``rejected_sites`` and
``rejected_reasons``, as :class:`~fedcare.aggregation.validate.ValidateUpdates` does. What it
passes on is an ordinary update, so validation, robust layers and central DP run unchanged.

The layer's entry in :meth:`Decompress.site_spec` (``{"compression": {"version": 1, "method":
..., "ratio": ...}}``) is the plan's (:mod:`fedcare.strategy.compression`); a site derives it
from the approved plan. Compression is for privacy mode ``open``: under masking (``secure``,
``private``) a site sends a quantized ring vector and under ``encrypted`` CKKS ciphertexts, so a
compressed update could not be summed there (the study is refused, naming the reason).

Memory: not bounded: each update is decoded into a whole array before the inner aggregator
adds it (one decoded update at a time).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.aggregation.compress_codec import METHODS, decode, encode
from fedcare.errors import ConfigError, ValidationError
from fedcare.records.arrays import ArrayRecord

__all__ = [
    "ERROR_FEEDBACK",
    "SPEC_KEY",
    "SPEC_VERSION",
    "Decompress",
    "DecompressState",
    "compression_spec",
    "read_spec",
    "site_compress",
]

SPEC_KEY = "compression"
SPEC_VERSION = 1
#: The methods whose site half keeps an error-feedback residual (fp16/bf16 lose far less).
ERROR_FEEDBACK = frozenset({"int8", "topk"})


def compression_spec(method: str, ratio: float | None = None) -> dict[str, Any]:
    """The pipeline entry of ``method`` (``ratio``: top-k's kept share, in (0, 1)).

    Raises
    ------
    ConfigError
        For an unknown method, or a ratio missing for top-k, given for another method, or
        outside (0, 1).
    """
    if method not in METHODS:
        raise ConfigError(f"compression method {method!r} is unknown; known: {METHODS}")
    if method == "topk":
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio < 1:
            raise ConfigError(f"compression topk needs a ratio in (0, 1), got {ratio!r}")
        return {"version": SPEC_VERSION, "method": method, "ratio": float(ratio)}
    if ratio is not None:
        raise ConfigError(f"compression {method} takes no ratio (got {ratio!r}); only topk does")
    return {"version": SPEC_VERSION, "method": method}


def read_spec(pipeline: Mapping[str, Any]) -> tuple[str, float] | None:
    """``(method, ratio)`` of a task pipeline's compression entry, or None without one.

    Raises
    ------
    ValidationError
        For an entry of another version, an unknown method or a bad ratio.
    """
    spec = pipeline.get(SPEC_KEY)
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or spec.get("version") != SPEC_VERSION:
        raise ValidationError(
            f"task pipeline {SPEC_KEY!r} entry {spec!r}: expected version {SPEC_VERSION}"
        )
    try:
        checked = compression_spec(str(spec.get("method")), spec.get("ratio"))
    except ConfigError as err:
        raise ValidationError(f"task pipeline {SPEC_KEY!r}: {err}") from None
    return checked["method"], float(checked.get("ratio", 1.0))


def site_compress(
    pipeline: Mapping[str, Any], arrays: ArrayRecord, residual: ArrayRecord | None = None
) -> tuple[ArrayRecord, ArrayRecord | None]:
    """The site half: ``(what the site sends, the residual it keeps)``.

    Without a compression entry ``arrays`` leave as they are. With error feedback (int8,
    top-k) the site compresses ``arrays + residual`` and keeps ``arrays + residual -
    decoded``; other methods keep no residual (None). Never mutates its inputs.

    Raises
    ------
    ValidationError
        For a bad pipeline entry, a residual shaped unlike ``arrays``, or (fp16) a value beyond
        float16's range.
    """
    spec = read_spec(pipeline)
    if spec is None:
        return arrays, None
    method, ratio = spec
    target = arrays
    if method in ERROR_FEEDBACK and residual is not None:
        arrays.check_structure(residual, what="saved compression residual")
        target = arrays.zip_map(residual, lambda a, r: (a + r).astype(a.dtype))
    wire = encode(target, method, ratio)
    if method not in ERROR_FEEDBACK:
        return wire, None
    sent = decode("(this site)", wire, target, method, ratio)
    return wire, target - sent


@dataclass(frozen=True)
class DecompressState:
    template: ArrayRecord
    inner: Any


class Decompress(Aggregator[DecompressState]):
    """Decode each compressed contribution, rejecting malformed ones by site (outermost layer).

    Measurements: the inner aggregator's, with this layer's rejections merged into
    ``rejected_sites``/``rejected_reasons``, plus ``compressed_bytes`` (array bytes received),
    ``uncompressed_bytes`` (what the same contributions take uncompressed) and
    ``compression_ratio`` (their quotient).
    """

    def __init__(self, inner: Aggregator[Any], *, method: str, ratio: float | None = None) -> None:
        spec = compression_spec(method, ratio)
        self.inner = inner
        self.method = method
        self.ratio = float(spec.get("ratio", 1.0))
        self._spec = spec

    def init(self, template: ArrayRecord) -> DecompressState:
        return DecompressState(template=template, inner=self.inner.init(template))

    def update(
        self, state: DecompressState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, DecompressState, Measurements]:
        rejected: dict[str, str] = {}
        sizes = {"compressed": 0, "uncompressed": 0}

        def decoded() -> Iterator[Contribution]:
            for c in contributions:
                try:
                    arrays = decode(c.site_id, c.arrays, state.template, self.method, self.ratio)
                except ValidationError as err:
                    rejected[c.site_id] = str(err)
                    continue
                sizes["compressed"] += c.arrays.nbytes
                sizes["uncompressed"] += state.template.nbytes
                yield Contribution(c.site_id, arrays, c.weight)

        result, inner_state, inner = self.inner.update(state.inner, decoded())
        measurements: Measurements = {
            **inner,
            "rejected_sites": sorted({*inner.get("rejected_sites", []), *rejected}),
            "rejected_reasons": {**inner.get("rejected_reasons", {}), **rejected},
            "compressed_bytes": sizes["compressed"],
            "uncompressed_bytes": sizes["uncompressed"],
            "compression_ratio": sizes["compressed"] / sizes["uncompressed"]
            if sizes["uncompressed"]
            else 1.0,
        }
        return result, DecompressState(state.template, inner_state), measurements

    def site_spec(self) -> Mapping[str, Any]:
        return {**self.inner.site_spec(), SPEC_KEY: dict(self._spec)}

    def multistage(self) -> str | None:
        return self.inner.multistage()
