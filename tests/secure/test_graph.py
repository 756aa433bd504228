import pytest

from fedcare.errors import ConfigError
from fedcare.secure.secagg.graph import default_degree, default_threshold, neighbour_graph


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
