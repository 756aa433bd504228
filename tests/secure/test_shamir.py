import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcare.errors import ValidationError
from fedcare.secure.secagg.shamir import PRIME, reconstruct, split


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
