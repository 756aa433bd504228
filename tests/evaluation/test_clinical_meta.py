"""DerSimonian–Laird random-effects meta-analysis (fedcare.evaluation.meta) against examples
worked by hand."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm, t

from fedcare.evaluation.meta import dersimonian_laird, hanley_mcneil_se, meta_logit

Z = float(norm.ppf(0.975))


def test_equal_variances_hand_example() -> None:
    # y = 0, 1, 3 with v = 1: fixed = 4/3, Q = 42/9, C = 3 - 3/3 = 2,
    # tau2 = (42/9 - 2) / 2 = 4/3, weights 3/7 each, se = sqrt(7/9), I2 = 4/7
    out = dersimonian_laird([0.0, 1.0, 3.0], [1.0, 1.0, 1.0])
    assert out["k"] == 3
    assert out["fixed"] == pytest.approx(4 / 3)
    assert out["q"] == pytest.approx(42 / 9)
    assert out["tau2"] == pytest.approx(4 / 3)
    assert out["random"] == pytest.approx(4 / 3)
    assert out["se"] == pytest.approx(math.sqrt(7 / 9))
    assert out["i2"] == pytest.approx(4 / 7)
    assert out["lo"] == pytest.approx(4 / 3 - Z * math.sqrt(7 / 9))
    half = float(t.ppf(0.975, 1)) * math.sqrt(4 / 3 + 7 / 9)  # t with k - 2 = 1 df
    assert out["pi_lo"] == pytest.approx(4 / 3 - half)
    assert out["pi_hi"] == pytest.approx(4 / 3 + half)


def test_unequal_variances_hand_example() -> None:
    # y = 0, 1, 3 with v = 1, 1, 2: w = 1, 1, 1/2, fixed = 2.5 / 2.5 = 1, Q = 1 + 0 + 2 = 3,
    # C = 2.5 - 2.25 / 2.5 = 1.6, tau2 = 1 / 1.6 = 0.625; w* = 8/13, 8/13, 8/21,
    # random = (8/13 + 24/21) / (16/13 + 8/21) = 12/11, se = sqrt(273/440), I2 = 1/3
    out = dersimonian_laird([0.0, 1.0, 3.0], [1.0, 1.0, 2.0])
    assert out["fixed"] == pytest.approx(1.0)
    assert out["q"] == pytest.approx(3.0)
    assert out["tau2"] == pytest.approx(0.625)
    assert out["random"] == pytest.approx(12 / 11)
    assert out["se"] == pytest.approx(math.sqrt(273 / 440))
    assert out["i2"] == pytest.approx(1 / 3)


def test_homogeneous_sites_have_no_between_site_variance() -> None:
    out = dersimonian_laird([0.5, 0.52, 0.49, 0.51], [0.01, 0.02, 0.01, 0.03])
    assert out["tau2"] == 0.0 and out["i2"] == 0.0
    assert out["random"] == pytest.approx(out["fixed"])  # type: ignore[arg-type]


def test_few_sites() -> None:
    one = dersimonian_laird([0.3], [0.04])
    assert one["k"] == 1 and one["fixed"] == one["random"] == 0.3
    assert one["lo"] == pytest.approx(0.3 - Z * 0.2)
    assert one["tau2"] is None and one["i2"] is None and one["pi_lo"] is None
    two = dersimonian_laird([0.3, 0.5], [0.04, 0.04])
    assert two["k"] == 2 and two["tau2"] is not None and two["pi_lo"] is None
    none = dersimonian_laird([], [])
    assert none["k"] == 0 and none["random"] is None
    # unusable variances are left out
    assert dersimonian_laird([0.3, 0.9], [0.04, 0.0])["k"] == 1


def test_logit_scale_maps_back() -> None:
    out = meta_logit([0.8, 0.8], [0.3, 0.3])
    assert out["random"] == pytest.approx(0.8)
    lo = 1 / (1 + math.exp(-(math.log(4) - Z * 0.3 / math.sqrt(2))))
    assert out["lo"] == pytest.approx(lo)
    assert meta_logit([1.0, 0.0], [0.3, 0.3])["k"] == 0


def test_hanley_mcneil() -> None:
    # A = 0.8, 10 positives, 20 negatives: Q1 = 0.8/1.2, Q2 = 1.28/1.8
    a, m, n = 0.8, 10, 20
    var = a * (1 - a) + (m - 1) * (a / (2 - a) - a * a) + (n - 1) * (2 * a * a / (1 + a) - a * a)
    assert hanley_mcneil_se(a, m, n) == pytest.approx(math.sqrt(var / (m * n)))
    assert hanley_mcneil_se(0.8, 0, 5) is None
