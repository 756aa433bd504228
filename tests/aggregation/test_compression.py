"""Update compression: round-trip bounds, top-k exactness, error feedback, the server half's
checks of malformed replies (each rejected naming its site)."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.aggregation import Contribution, ValidateUpdates, WeightedMean
from fedcare.aggregation.compress_codec import bf16_bits, bf16_values, decode, encode, topk_count
from fedcare.aggregation.compression import Decompress, compression_spec, site_compress
from fedcare.errors import ConfigError, ValidationError
from fedcare.records.arrays import ArrayRecord

RNG = np.random.default_rng(7)
TEMPLATE = ArrayRecord({"w": np.zeros((40, 25), np.float32), "b": np.zeros(5, np.float32)})


def update(seed: int, scale: float = 1.0) -> ArrayRecord:
    rng = np.random.default_rng(seed)
    return ArrayRecord(
        {k: (scale * rng.normal(size=v.shape)).astype(v.dtype) for k, v in TEMPLATE.items()}
    )


def round_trip(x: ArrayRecord, method: str, ratio: float = 1.0) -> ArrayRecord:
    return decode("s0", encode(x, method, ratio), x, method, ratio)


def test_fp16_round_trip_relative_error_within_1e_3() -> None:
    x = update(1, scale=3.0)
    back = round_trip(x, "fp16")
    for k in x:
        err = np.abs(back[k] - x[k])
        assert back[k].dtype == np.float32
        assert np.all(err <= 1e-3 * np.abs(x[k]) + 2.0**-25)
        assert np.all(err <= 2.0**-11 * np.abs(x[k]) + 2.0**-25)  # the stated bound


def test_fp16_refuses_values_beyond_its_range() -> None:
    big = ArrayRecord({"w": np.array([1.0, 7e4], np.float32)})
    with pytest.raises(ValidationError, match="beyond float16's range"):
        encode(big, "fp16")


def test_bf16_round_trip_within_2_to_minus_8_and_matches_ml_dtypes() -> None:
    x = update(2, scale=1e3)
    back = round_trip(x, "bf16")
    for k in x:
        assert np.all(np.abs(back[k] - x[k]) <= 2.0**-8 * np.abs(x[k]))
    ml_dtypes = pytest.importorskip("ml_dtypes")
    v = x["w"].ravel()
    ref = v.astype(ml_dtypes.bfloat16).view(np.uint16)
    assert np.array_equal(bf16_bits(v), ref)  # round to nearest even, bit for bit
    assert np.array_equal(bf16_values(ref), v.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_int8_error_at_most_half_a_scale_per_element() -> None:
    x = update(3, scale=0.2)
    wire = encode(x, "int8")
    back = decode("s0", wire, x, "int8")
    for k in x:
        scale = float(wire[f"scale/{k}"])
        assert scale == pytest.approx(np.abs(x[k]).max() / 127, rel=1e-6)
        assert wire[f"values/{k}"].dtype == np.int8
        assert np.all(np.abs(back[k] - x[k]) <= scale / 2 * (1 + 1e-5))


def test_int8_of_a_zero_array_is_zero() -> None:
    zero = ArrayRecord({"w": np.zeros(4, np.float32)})
    assert np.array_equal(round_trip(zero, "int8")["w"], np.zeros(4, np.float32))


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.33])
def test_topk_keeps_exactly_the_k_largest_magnitudes(ratio: float) -> None:
    x = update(4)
    wire = encode(x, "topk", ratio)
    back = decode("s0", wire, x, "topk", ratio)
    for k, v in x.items():
        n = v.size
        kept = topk_count(n, ratio)
        assert kept == max(1, int(np.ceil(ratio * n)))
        assert wire[f"indices/{k}"].dtype == np.uint32 and wire[f"indices/{k}"].shape == (kept,)
        nonzero = np.flatnonzero(back[k])
        assert nonzero.size == kept
        mags = np.abs(v.ravel())
        assert mags[nonzero].min() >= np.delete(mags, nonzero).max(initial=0.0)
        assert np.array_equal(back[k].ravel()[nonzero], v.ravel()[nonzero])  # values exact


@pytest.mark.parametrize(("method", "ratio"), [("int8", 1.0), ("topk", 0.05)])
def test_error_feedback_sum_of_sent_tracks_sum_of_true_updates(method: str, ratio: float) -> None:
    pipeline = {"compression": compression_spec(method, ratio if method == "topk" else None)}
    residual: ArrayRecord | None = None
    true_sum = TEMPLATE.astype(np.float64)
    sent_sum = TEMPLATE.astype(np.float64)
    no_feedback = TEMPLATE.astype(np.float64)
    for t in range(200):
        u = update(100 + t, scale=0.1)
        wire, residual = site_compress(pipeline, u, residual)
        assert residual is not None
        sent = decode("s0", wire, u, method, ratio)
        true_sum = true_sum + u.astype(np.float64)
        sent_sum = sent_sum + sent.astype(np.float64)
        plain = decode("s0", encode(u, method, ratio), u, method, ratio)
        no_feedback = no_feedback + plain.astype(np.float64)
        # sent so far + what the site still holds = everything it trained (float32 rounding)
        gap = (true_sum - sent_sum - residual.astype(np.float64)).norm()
        assert gap <= 1e-4 * true_sum.norm()
    drift = (true_sum - sent_sum).norm()
    assert drift == pytest.approx(residual.norm(), rel=1e-3)  # off by one bounded residual
    assert drift < 0.25 * (true_sum - no_feedback).norm()  # far better than without feedback
    assert residual.norm() < 12 * update(0, scale=0.1).norm()  # bounded, not growing


def test_no_compression_entry_leaves_the_update_alone() -> None:
    x = update(5)
    wire, kept = site_compress({}, x)
    assert wire is x and kept is None


def test_spec_checks() -> None:
    assert compression_spec("topk", 0.2) == {"version": 1, "method": "topk", "ratio": 0.2}
    with pytest.raises(ConfigError, match="topk needs a ratio in"):
        compression_spec("topk", 1.5)
    with pytest.raises(ConfigError, match="takes no ratio"):
        compression_spec("int8", 0.5)
    with pytest.raises(ConfigError, match="unknown"):
        compression_spec("zip")


# The server half ------------------------------------------------------------------------------
def _layer(method: str, ratio: float | None = None) -> Decompress:
    return Decompress(ValidateUpdates(WeightedMean()), method=method, ratio=ratio)


def _run(layer: Decompress, contributions: list[Contribution]) -> tuple[ArrayRecord, dict]:
    result, _, measurements = layer.update(layer.init(TEMPLATE), contributions)
    return result, measurements


@pytest.mark.parametrize(
    ("method", "ratio"), [("fp16", None), ("bf16", None), ("int8", None), ("topk", 0.1)]
)
def test_decompress_gives_the_mean_of_the_decoded_updates(method: str, ratio: float | None) -> None:
    r = ratio or 1.0
    ups = [update(10 + i) for i in range(3)]
    wires = [encode(u, method, r) for u in ups]
    result, m = _run(
        _layer(method, ratio), [Contribution(f"s{i}", w, 1.0) for i, w in enumerate(wires)]
    )
    decoded = [decode("x", w, TEMPLATE, method, r) for w in wires]
    for k in TEMPLATE:
        assert np.allclose(result[k], np.mean([d[k] for d in decoded], axis=0), atol=1e-6)
    assert m["rejected_sites"] == [] and m["num_contributions"] == 3
    assert m["uncompressed_bytes"] == 3 * TEMPLATE.nbytes
    assert m["compressed_bytes"] == sum(w.nbytes for w in wires)


def _tampered(wire: ArrayRecord, key: str, value: np.ndarray) -> ArrayRecord:
    return ArrayRecord({**dict(wire), key: value})


def test_malformed_compressed_replies_are_rejected_naming_their_site() -> None:
    good = encode(update(20), "topk", 0.1)
    idx = good["indices/w"].copy()
    idx[-1] = TEMPLATE["w"].size + 3  # out of range
    unsorted = good["indices/w"][::-1].copy()
    bad = {
        "out-of-range": _tampered(good, "indices/w", idx),
        "wrong-dtype": _tampered(good, "values/w", good["values/w"].astype(np.float64)),
        "unsorted": _tampered(good, "indices/w", unsorted),
        "nan": _tampered(good, "values/b", np.full_like(good["values/b"], np.nan)),
        "uncompressed": update(21),
    }
    contributions = [Contribution("honest", good, 2.0)]
    contributions += [Contribution(site, arrays, 1.0) for site, arrays in bad.items()]
    result, m = _run(_layer("topk", 0.1), contributions)
    assert m["rejected_sites"] == sorted(bad)
    reasons = m["rejected_reasons"]
    assert f"index {TEMPLATE['w'].size + 3}" in reasons["out-of-range"]
    assert "out-of-range" in reasons["out-of-range"]  # the site is named
    assert "has dtype float64, expected float32" in reasons["wrong-dtype"]
    assert "repeated or unsorted" in reasons["unsorted"]
    assert "NaN or infinite" in reasons["nan"]
    assert "missing arrays" in reasons["uncompressed"]
    honest = decode("honest", good, TEMPLATE, "topk", 0.1)
    assert all(np.array_equal(result[k], honest[k]) for k in TEMPLATE)  # only the honest one


def test_int8_with_a_negative_scale_and_wrong_shape_are_rejected() -> None:
    good = encode(update(22), "int8")
    neg = _tampered(good, "scale/w", np.asarray(-1.0, np.float32))
    shape = _tampered(good, "values/b", np.zeros(6, np.int8))
    _, m = _run(
        _layer("int8"),
        [Contribution("neg", neg), Contribution("shape", shape), Contribution("ok", good)],
    )
    assert m["rejected_sites"] == ["neg", "shape"]
    assert "expected >= 0" in m["rejected_reasons"]["neg"]
    assert "shape (6,), expected (5,)" in m["rejected_reasons"]["shape"]


def test_site_spec_is_the_pipeline_entry() -> None:
    assert _layer("topk", 0.25).site_spec() == {
        "compression": {"version": 1, "method": "topk", "ratio": 0.25}
    }
