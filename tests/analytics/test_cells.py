"""Every count cell's row vector counts exactly what the site releases for it."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcare.analytics.answer import _answer, answer_plan
from fedcare.analytics.cells import answer_cells
from fedcare.analytics.disclosure import SUPPRESSED, AnalyticsPolicy, Releaser
from fedcare.analytics.frame import site_frame
from fedcare.analytics.spec import AnalyticsSpec
from fedcare.data.base import FederatedDataset

TCGA_SPEC: dict[str, Any] = {
    "queries": [
        {"type": "count"},
        {"type": "kaplan_meier", "grid": [365.0 * k for k in range(1, 11)]},
        {
            "type": "quantiles",
            "variable": "time",
            "probabilities": [0.1, 0.5],
            "lower": 0,
            "upper": 8000,
            "points": 7,
        },
        {"type": "correlation", "variables": ["time", "x0"]},
        {"type": "histogram", "variable": "time", "edges": [0, 500, 1000, 2000, 4000, 8000]},
        {
            "type": "cohort",
            "filter": "event == 1",
            "queries": [
                {"type": "kaplan_meier", "grid": [365.0, 730.0, 1825.0]},
                {"type": "moments", "variables": ["time"]},
            ],
        },
    ]
}


def _thresholds() -> dict[str, Any]:
    return {"q2": (np.linspace(500, 4000, 14).reshape(2, 7)).tolist()}


def test_cell_vectors_count_what_is_released(tcga: FederatedDataset) -> None:
    spec = AnalyticsSpec.from_dict(TCGA_SPEC)
    plan = {"thresholds": _thresholds()}
    for site in tcga.sites:
        frame = site_frame(site)
        released = _answer(frame, spec, plan, Releaser(0))  # nothing withheld
        cells = answer_cells(frame, spec, None, plan["thresholds"])
        assert set(cells) == {
            k
            for k in released
            if k.rsplit("/", 1)[1].startswith("count") and not k.endswith(SUPPRESSED)
        }
        for key, found in cells.items():
            counts = [float(m.sum()) for m in found.members]
            assert counts == np.asarray(released[key]).ravel().tolist(), (site.site_id, key)


def test_complementary_suppression_of_a_survival_job_marks_every_withheld_cell(
    tcga: FederatedDataset,
) -> None:
    plan = {"analytics": TCGA_SPEC, "thresholds": _thresholds()}
    withheld = 0
    for site in tcga.sites:
        frame = site_frame(site)
        arrays, metrics = answer_plan(
            frame, plan, AnalyticsPolicy(min_cell=5), np.random.default_rng(0)
        )
        withheld += int(metrics["complementary"])
        tails = np.asarray(arrays["q2/tail"])
        hidden = np.asarray(arrays["q2/count_le:suppressed"]).astype(bool)
        assert np.all((tails != 0) == hidden)  # every withheld count_le says where it may be
    assert withheld > 0
