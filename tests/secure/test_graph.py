import pytest

from fedcare.errors import ConfigError
from fedcare.secure.secagg.graph import (
    check_settings,
    default_degree,
    default_threshold,
    min_degree,
    neighbour_graph,
)


@pytest.mark.parametrize("n", [2, 5, 10, 31, 100, 1000])
def test_graph_is_regular_symmetric_and_seeded(n: int) -> None:
    sites = [f"site-{i}" for i in range(n)]
    k = default_degree(n)
    g = neighbour_graph(sites, k, seed=7)
    assert all(len(v) == k and s not in v for s, v in g.items())
    assert all(s in g[v] for s, near in g.items() for v in near)
    assert g == neighbour_graph(list(reversed(sites)), k, seed=7)
    if k < n - 1:
        assert g != neighbour_graph(sites, k, seed=8)
    assert 2 <= default_threshold(k) <= k + 1


def test_degree_grows_logarithmically() -> None:
    assert default_degree(10) == 9  # complete graph for few sites
    assert default_degree(100) == 20
    assert default_degree(10_000) <= 40


def test_bad_degree_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be even"):
        neighbour_graph([str(i) for i in range(10)], 3, seed=0)
    with pytest.raises(ConfigError, match=r"in \[1, 4\]"):
        neighbour_graph([str(i) for i in range(5)], 5, seed=0)


def test_check_settings_defaults_are_todays_degree_and_threshold() -> None:
    for n in (2, 5, 10, 100, 1000):
        k = min(default_degree(n), n - 1)
        assert check_settings(n, None, None) == (k, default_threshold(k))
    assert min_degree(100) == 14 < default_degree(100)
    assert min_degree(5) == 4  # few sites: the complete graph


def test_check_settings_takes_what_keeps_secagg_secure() -> None:
    assert check_settings(100, 14, None) == (14, 8)
    assert check_settings(100, 20, 11) == (20, 11)  # 11 of 21 holders: the smallest majority
    assert check_settings(100, 30, 31) == (30, 31)  # no dropout tolerated, but safe
    assert check_settings(10, 50, 10) == (9, 10)  # more than n - 1: the complete graph


@pytest.mark.parametrize(
    ("neighbours", "threshold", "match"),
    [
        (12, None, r"neighbours=12 is below 14 = 2 ceil\(log2 100\)"),
        (15, None, r"neighbours=15 must be even below n - 1 = 99"),
        (20, 10, r"threshold=10 must be in \[11, 21\].*strict majority"),
        (20, 22, r"threshold=22 must be in \[11, 21\]"),
        (None, 5, r"threshold=5 must be in \[11, 21\]"),
    ],
)
def test_check_settings_refuses_naming_setting_value_and_reason(
    neighbours: int | None, threshold: int | None, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        check_settings(100, neighbours, threshold)
