"""Simulation refuses, as a coordinator does, sites whose features differ from the majority's."""

from __future__ import annotations

import dataclasses

from fedcare.data.synthetic import load_synthetic
from fedcare.simulation.run import agreeing_sites


def test_a_site_with_another_input_shape_is_left_out_naming_why() -> None:
    ds = load_synthetic(num_sites=3, n_features=4, rows_per_site=20)
    other = load_synthetic(num_sites=1, n_features=5, rows_per_site=20).sites[0]
    odd = dataclasses.replace(other, site_id="odd")
    mixed = dataclasses.replace(ds, sites=(*ds.sites, odd))
    kept = agreeing_sites(mixed)
    assert kept.site_ids == ds.site_ids
    assert kept.extra["refused_sites"] == {
        "odd": "feature schema differs from the study's: input shape [5] here vs [4] in the "
        "reference"
    }
    assert agreeing_sites(ds) is ds
