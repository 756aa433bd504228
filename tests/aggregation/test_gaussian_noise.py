from collections.abc import Iterable, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedcare.aggregation import Contribution, WeightedMean
from fedcare.aggregation.gaussian_noise import GaussianNoise
from fedcare.errors import ConfigError
from fedcare.privacy.accounting import event_from_dict
from fedcare.records.arrays import ArrayRecord
from tests.aggregation.helpers import TEMPLATE, contributions, flat


def layer(z: float, clip: float, m: int, seed: int | None = 0) -> GaussianNoise:
    return GaussianNoise(
        WeightedMean(), noise_multiplier=z, clip_norm=clip, expected_sites=m, seed=seed
    )


class Recording(WeightedMean):
    """A mean that notes the norm and weight of every contribution it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[float, float]] = []

    def update(self, state, contributions):  # type: ignore[no-untyped-def]
        def noting(cs: Iterable[Contribution]) -> Iterator[Contribution]:
            for c in cs:
                self.seen.append((c.arrays.norm(), c.weight))
                yield c

        return super().update(state, noting(contributions))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=5, max_size=5),
        min_size=1,
        max_size=6,
    ),
    st.floats(0.01, 10.0),
)
def test_clipping_bounds_every_contribution(rows: list[list[float]], clip: float) -> None:
    matrix = np.asarray(rows)
    inner = Recording()
    m = len(rows) + 1
    agg = GaussianNoise(inner, noise_multiplier=0.0, clip_norm=clip, expected_sites=m, seed=0)
    result, _, meas = agg.update(agg.init(TEMPLATE), contributions(matrix, [7.0] * len(rows)))
    assert len(inner.seen) == len(rows)
    assert all(norm <= clip * (1 + 1e-9) and w == 1.0 for norm, w in inner.seen)
    norms = np.linalg.norm(matrix, axis=1)
    clipped = matrix * np.minimum(1.0, clip / np.maximum(norms, 1e-300))[:, None]
    np.testing.assert_allclose(flat(result), clipped.sum(axis=0) / m, atol=1e-9)
    assert meas["clipped_fraction"] == pytest.approx(np.mean(norms > clip))


def test_noise_has_the_configured_std() -> None:
    # 4,000 coordinates of the noised sum of zero updates: KS test against N(0, (z C)^2)
    # must not reject at 0.1%, and the sample std is within 5% of z*C = 0.6.
    template = ArrayRecord({"w": np.zeros(4000)})
    agg = GaussianNoise(
        WeightedMean(), noise_multiplier=1.5, clip_norm=0.4, expected_sites=1, seed=7
    )
    zeros = [Contribution("a", template)]
    result, state, meas = agg.update(agg.init(template), zeros)
    draws = result["w"]
    assert meas["noise_std"] == pytest.approx(0.6)
    assert stats.kstest(draws, "norm", args=(0.0, 0.6)).pvalue > 1e-3
    assert np.std(draws) == pytest.approx(0.6, rel=0.05)
    again, _, _ = agg.update(state, zeros)
    assert not np.array_equal(again["w"], draws)  # a fresh draw every round


def test_fixed_denominator_and_unit_weights() -> None:
    rows = np.array([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0]])
    agg = layer(0.0, 10.0, m=4)
    result, _, meas = agg.update(agg.init(TEMPLATE), contributions(rows, [1.0, 100.0]))
    np.testing.assert_allclose(flat(result), [0.25, 0.25, 0, 0, 0])
    assert meas["denominator"] == 4


def test_measurements_carry_the_dp_event() -> None:
    agg = GaussianNoise(
        WeightedMean(),
        noise_multiplier=1.1,
        clip_norm=1.0,
        expected_sites=3,
        seed=1,
        sampling_probability=0.5,
    )
    _, _, meas = agg.update(agg.init(TEMPLATE), contributions(np.ones((3, 5))))
    event = event_from_dict(meas["dp_event"])
    assert (event.noise_multiplier, event.sampling_probability, event.count) == (1.1, 0.5, 1)
    assert meas["dp_events"] == [meas["dp_event"]]
    assert meas["clip_norm"] == 1.0 and meas["clipped_fraction"] == 1.0


def test_seed_none_draws_fresh_noise_and_seed_repeats() -> None:
    rows = np.zeros((2, 5))
    seeded = [layer(1.0, 1.0, 2, seed=3) for _ in range(2)]
    a, b = (flat(g.update(g.init(TEMPLATE), contributions(rows))[0]) for g in seeded)
    np.testing.assert_array_equal(a, b)
    free = [layer(1.0, 1.0, 2, seed=None) for _ in range(2)]
    c, d = (flat(g.update(g.init(TEMPLATE), contributions(rows))[0]) for g in free)
    assert not np.array_equal(c, d)


def test_inputs_are_not_changed() -> None:
    rows = np.full((2, 5), 3.0)
    contribs = contributions(rows)
    agg = layer(1.0, 1.0, 2)
    agg.update(agg.init(TEMPLATE), contribs)
    assert all(np.all(c.arrays["w"] == 3.0) for c in contribs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"expected_sites": 0}, "expected_sites"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bad_options_are_named(kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {
        "noise_multiplier": 1.0,
        "clip_norm": 1.0,
        "expected_sites": 2,
        "seed": 0,
        **kwargs,
    }
    with pytest.raises(ConfigError, match=message):
        GaussianNoise(WeightedMean(), **options)  # type: ignore[arg-type]
