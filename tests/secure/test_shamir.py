import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcare.errors import ValidationError
from fedcare.secure.secagg.shamir import PRIME, reconstruct, reconstruct_many, split


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=2, max_size=64).filter(lambda b: len(b) % 2 == 0),
    n=st.integers(2, 9),
    data=st.data(),
)
def test_any_t_shares_reconstruct(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
    shares = split(secret, xs, t, os.urandom)
    assert shares.shape == (n, len(secret) // 2) and shares.max() < PRIME
    pick = data.draw(st.permutations(range(n)))[:t]
    assert reconstruct([xs[i] for i in pick], shares[pick], t) == secret


def test_fewer_than_t_shares_do_not_reconstruct() -> None:
    secret = os.urandom(32)
    xs = list(range(1, 8))
    shares = split(secret, xs, 4, os.urandom)
    with pytest.raises(ValidationError, match="3 shares given, 4 needed"):
        reconstruct(xs[:3], shares[:3], 4)
    # claiming t = 3 with 3 shares of a degree-3 polynomial gives a wrong secret
    for combo in itertools.combinations(range(7), 3):
        try:
            got = reconstruct([xs[i] for i in combo], shares[list(combo)], 3)
        except ValidationError:
            continue
        assert got != secret


def test_t_minus_one_shares_are_uniform() -> None:
    # the share at a fixed point, over fresh polynomials, does not depend on the secret
    a = np.array([split(b"\x00\x00", [1, 2], 2, os.urandom)[0, 0] for _ in range(2000)])
    b = np.array([split(b"\xff\xff", [1, 2], 2, os.urandom)[0, 0] for _ in range(2000)])
    assert abs(a.mean() - PRIME / 2) < 0.05 * PRIME and abs(b.mean() - PRIME / 2) < 0.05 * PRIME


def test_split_rejects_bad_arguments() -> None:
    with pytest.raises(ValidationError, match="threshold must be in"):
        split(b"ab", [1, 2], 3, os.urandom)
    with pytest.raises(ValidationError, match="distinct"):
        split(b"ab", [1, 1], 2, os.urandom)
    with pytest.raises(ValidationError, match="even number"):
        split(b"abc", [1, 2], 2, os.urandom)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 12), m=st.integers(1, 6), data=st.data())
def test_reconstruct_many_matches_the_scalar_reconstruct(
    n: int, m: int, data: st.DataObject
) -> None:
    t = data.draw(st.integers(1, n))
    secrets, point_sets, share_sets = [], [], []
    for _ in range(m):
        secret = os.urandom(32)
        xs = data.draw(st.lists(st.integers(1, PRIME - 1), min_size=n, max_size=n, unique=True))
        shares = split(secret, xs, t, os.urandom)
        keep = data.draw(st.permutations(range(n)))[: data.draw(st.integers(t, n))]
        secrets.append(secret)
        point_sets.append([xs[i] for i in keep])
        share_sets.append(shares[keep])
    got = reconstruct_many(point_sets, share_sets, t)
    scalar = [reconstruct(p, s, t) for p, s in zip(point_sets, share_sets, strict=True)]
    assert got == scalar == secrets


def test_reconstruct_many_refuses_like_the_scalar_one() -> None:
    secret = os.urandom(32)
    xs = list(range(1, 8))
    shares = split(secret, xs, 4, os.urandom)
    good = (xs, shares)
    with pytest.raises(ValidationError, match="secret 1: 3 shares given, 4 needed"):
        reconstruct_many([good[0], xs[:3]], [good[1], shares[:3]], 4)
    with pytest.raises(ValidationError, match="secret 0: share points must be distinct"):
        reconstruct_many([[1, 1, 2, 3]], [shares[:4]], 4)
    tampered = shares.copy()
    tampered[0, 0] = (tampered[0, 0] + 1) % PRIME
    scalar_fails = False
    try:
        reconstruct(xs, tampered, 4)
    except ValidationError:
        scalar_fails = True
    if scalar_fails:  # (a tampered share decodes to a wrong but valid chunk with p ~ 2^-15)
        with pytest.raises(ValidationError, match="secret 1: shares do not reconstruct"):
            reconstruct_many([xs, xs], [shares, tampered], 4)
    assert reconstruct_many([], [], 4) == []
