"""The coordinator grid refuses, for its study only, sites whose feature schema differs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from fedcare.coordinator.grid import CoordinatorGrid
from fedcare.coordinator.hub import Hub
from fedcare.coordinator.store import CoordinatorStore
from fedcare.data.heart import HEART_FEATURES
from fedcare.data.schema_check import feature_schema

BUILTIN = feature_schema((13,), "float64", HEART_FEATURES)
MAPPED = feature_schema((13,), "float64", ["age", "sex_1", *HEART_FEATURES[2:]])


def _site(store: CoordinatorStore, site: str, described: dict) -> None:
    store.register_site(site, f"serial-{site}")
    store.touch_site(site, datasets={"heart-disease": described})


def test_refused_site_is_left_out_with_its_columns_named(
    make_store: Callable[..., CoordinatorStore],
) -> None:
    store = make_store(clock=lambda: datetime.now(timezone.utc))
    for site in ("a", "b"):
        _site(store, site, {"input_shape": [13], "schema": BUILTIN})
    _site(store, "c", {"input_shape": [13], "schema": MAPPED})
    _site(store, "d", {"input_shape": [14]})  # an older agent: shape only
    _site(store, "e", {"data_check": {"passed": False}})  # no usable data
    grid = CoordinatorGrid(store, store.artifacts, Hub(), "study", "heart-disease")
    assert grid.site_ids() == ["a", "b", "c", "d", "e"]  # no reference yet
    seen: list[tuple[str, str]] = []
    grid.on_refused = lambda site, reason: seen.append((site, reason))
    grid.set_reference(BUILTIN)
    assert grid.site_ids() == ["a", "b"]
    assert set(grid.refused) == {"c", "d", "e"}
    assert "column 1: 'sex_1' here vs 'sex' in the reference" in grid.refused["c"]
    assert "input shape [14] here vs [13]" in grid.refused["d"]
    assert "no usable data" in grid.refused["e"]
    grid.site_ids()
    assert [s for s, _ in seen] == ["c", "d", "e"]  # each refusal reported once
    # the site fixes its mapping and says so at its next Hello: it is taken again
    store.touch_site("c", datasets={"heart-disease": {"input_shape": [13], "schema": BUILTIN}})
    assert grid.site_ids() == ["a", "b", "c"] and "c" not in grid.refused
    # another study's grid (no reference) still offers every site
    other = CoordinatorGrid(store, store.artifacts, Hub(), "other", "heart-disease")
    assert other.site_ids() == ["a", "b", "c", "d", "e"]
