"""Reference histograms and the population stability index (fedcare.inference.drift)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from fedcare.errors import ValidationError
from fedcare.inference.drift import (
    EPSILON,
    bin_shares,
    drift,
    feature_reference,
    freeze_reference,
    psi,
    psi_status,
    sampling_psi,
)


def test_psi_equals_a_hand_computation() -> None:
    # (0.4 - 0.5) ln(0.4 / 0.5) + (0.6 - 0.5) ln(0.6 / 0.5)
    hand = -0.1 * math.log(0.8) + 0.1 * math.log(1.2)
    assert psi([0.5, 0.5], [0.4, 0.6]) == pytest.approx(hand, abs=1e-15)
    assert hand == pytest.approx(0.0405465108, abs=1e-10)
    # an empty bin counts as EPSILON: (0.5 - 1) ln(0.5 / 1) + (0.5 - eps) ln(0.5 / eps)
    empty = -0.5 * math.log(0.5) + (0.5 - EPSILON) * math.log(0.5 / EPSILON)
    assert psi([1.0, 0.0], [0.5, 0.5]) == pytest.approx(empty, abs=1e-12)
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    with pytest.raises(ValidationError, match="same cells"):
        psi([0.5, 0.5], [1.0])


def test_bands_are_the_conventional_ones() -> None:
    assert [psi_status(v) for v in (0.0, 0.099, 0.1, 0.2499, 0.25, 3.0)] == [
        "stable",
        "stable",
        "moderate",
        "moderate",
        "major",
        "major",
    ]


def test_numeric_reference_holds_decile_edges_and_shares() -> None:
    values = np.arange(1, 101, dtype=float)
    ref = feature_reference(np.append(values, [np.nan] * 25))
    assert ref["kind"] == "numeric" and ref["n"] == 125
    assert ref["edges"] == pytest.approx(np.quantile(values, np.linspace(0.1, 0.9, 9)).tolist())
    assert ref["shares"] == pytest.approx([10 / 125] * 10)
    assert ref["missing"] == pytest.approx(0.2)
    expected, actual = bin_shares(ref, np.append(values, [np.nan] * 25))
    assert expected == pytest.approx(actual) and sum(expected) == pytest.approx(1.0)
    same = drift(ref, np.append(values, [np.nan] * 25))
    assert same == {"psi": 0.0, "status": "stable", "noise": pytest.approx(10 * 2 / 125)}


def test_few_distinct_values_are_their_own_bins_and_new_values_fall_in_other() -> None:
    ref = feature_reference([0, 0, 1, np.nan, 2, 2, 2, 0])
    assert ref == {
        "kind": "categorical",
        "values": [0.0, 1.0, 2.0],
        "shares": [3 / 8, 1 / 8, 3 / 8],
        "missing": 1 / 8,
        "n": 8,
    }
    expected, actual = bin_shares(ref, [0, 1, 5, 5])
    assert expected == pytest.approx([3 / 8, 1 / 8, 3 / 8, 0.0, 1 / 8])
    assert actual == pytest.approx([0.25, 0.25, 0.0, 0.5, 0.0])
    hand = sum(
        (max(a, EPSILON) - max(e, EPSILON)) * math.log(max(a, EPSILON) / max(e, EPSILON))
        for e, a in zip(expected, actual, strict=True)
    )
    assert drift(ref, [0, 1, 5, 5])["psi"] == pytest.approx(hand, abs=1e-6)
    assert feature_reference([np.nan, np.nan]) == {"kind": "empty", "missing": 1.0, "n": 2}


def test_a_known_mean_shift_gives_the_psi_of_the_normal_distributions() -> None:
    rng = np.random.default_rng(3)
    train = rng.normal(0.0, 1.0, 200_000)
    ref = feature_reference(train)
    shifted = rng.normal(0.5, 1.0, 200_000)
    # the exact PSI of N(0.5, 1) against N(0, 1) over the reference's own decile bins
    cuts = np.concatenate([[-np.inf], ref["edges"], [np.inf]])
    e = np.diff(norm.cdf(cuts))
    a = np.diff(norm.cdf(cuts, loc=0.5))
    exact = float(np.sum((a - e) * np.log(a / e)))
    assert 0.2 < exact < 0.25  # decile bins see a little less than the KL-based 0.25
    measured = drift(ref, shifted)
    assert measured["psi"] == pytest.approx(exact, abs=0.01)
    assert measured["status"] == "moderate"
    assert drift(ref, rng.normal(1.0, 1.0, 50_000))["status"] == "major"
    assert drift(ref, rng.normal(0.0, 1.0, 50_000))["psi"] < 0.01


def test_the_sampling_noise_is_the_mean_psi_without_drift() -> None:
    rng = np.random.default_rng(0)
    psis = []
    for _ in range(200):
        ref = feature_reference(rng.normal(size=1000))
        psis.append(drift(ref, rng.normal(size=100)))
    noise = psis[0]["noise"]
    assert noise == pytest.approx(sampling_psi(10, 100, 1000)) == pytest.approx(0.099)
    assert np.mean([p["psi"] for p in psis]) == pytest.approx(noise, rel=0.1)
    with pytest.raises(ValidationError, match="positive"):
        sampling_psi(10, 0, 5)


def test_freeze_reference_names_every_feature_and_checks_shapes() -> None:
    X = np.column_stack([np.arange(50.0), np.tile([0.0, 1.0], 25)])
    ref = freeze_reference(X, ["age", "sex"], bins=5)
    assert ref["n"] == 50 and ref["bins"] == 5
    assert ref["features"]["age"]["kind"] == "numeric" and len(ref["features"]["age"]["edges"]) == 4
    assert ref["features"]["sex"]["values"] == [0.0, 1.0]
    with pytest.raises(ValidationError, match="2 columns, 3 feature names"):
        freeze_reference(X, ["a", "b", "c"])
    with pytest.raises(ValidationError, match="2-D"):
        freeze_reference(np.arange(3.0), ["a"])
