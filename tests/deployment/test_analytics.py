"""Federated analytics on a real federation: a coordinator job over mutual TLS.

The spec is queued as an analytics job (as ``fedcare analytics --federation`` does); the
coordinator's runner drives :func:`run_analytics` over its :class:`CoordinatorGrid`, the four
heart-disease site agents answer ``analytics`` tasks in their worker processes with their
default policy (``min_cell`` 5), and the stored result must equal the simulated one, withheld
cells included. ``fedcare study report`` then writes the analytics report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from fedcare.analytics.disclosure import AnalyticsPolicy
from fedcare.analytics.spec import AnalyticsSpec
from fedcare.cli.main import app
from fedcare.coordinator.analytics_jobs import analytics_job_result
from fedcare.data.registry import load_dataset
from fedcare.simulation.analytics import simulate_analytics

from ..conftest import require_mirror
from .helpers import HOSPITALS, deployment, provision, wait_for_status

pytestmark = pytest.mark.slow

SPEC = {
    "name": "heart-analytics",
    "dataset": "heart-disease",
    "dataset_options": {"protocol": "raw"},
    "queries": [
        {"type": "count"},
        {"type": "moments", "variables": ["age", "chol"]},
        {"type": "histogram", "variable": "age", "edges": [25, 35, 45, 55, 65, 75, 85]},
        {
            "type": "quantiles",
            "variable": "age",
            "probabilities": [0.5],
            "lower": 0,
            "upper": 128,
            "rounds": 3,
            "points": 3,
        },
        {"type": "correlation", "variables": ["age", "chol", "thalach"]},
        {"type": "cohort", "filter": "age >= 60 and sex == 0", "queries": [{"type": "count"}]},
    ],
}


def _numbers(value: object) -> object:
    """The result with numbers rounded to 9 significant digits (summation order differs)."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def test_analytics_job_on_a_federation_equals_simulation(tmp_path: Path) -> None:
    require_mirror()
    spec = AnalyticsSpec.from_dict(SPEC)
    spec_path = tmp_path / "query.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    home, waited, out = tmp_path / "home", tmp_path / "waited", tmp_path / "report"
    runner = CliRunner()
    with deployment(provision(tmp_path / "federation"), tmp_path) as running:
        store = running.store
        submit = ["analytics", str(spec_path), "--federation", str(home), "--min-sites", "4"]
        cli = runner.invoke(app, [*submit, "--wait", "--timeout", "150", "--out", str(waited)])
        assert cli.exit_code == 0, f"{cli.output}\n{running.describe()}"
        (study,) = store.list_studies()
        wait_for_status(store, study.id, describe=running.describe)
        got = analytics_job_result(store, study.id)
        report = runner.invoke(
            app, ["study", "report", study.id, "--out", str(out), "--home", str(home)]
        )
    assert json.loads((waited / "results.json").read_text()) == got
    assert got is not None
    assert got["sites"] == list(HOSPITALS) and got["failures"] == {}
    assert got["min_cell"] == {s: 5 for s in HOSPITALS}  # the agents' default policy
    assert got["rounds"] == 3  # one exchange, then two more quantile steps
    ds = load_dataset("heart-disease", protocol="raw")
    expected = simulate_analytics(spec, dataset=ds, policy=AnalyticsPolicy(min_cell=5)).to_dict()
    assert _numbers(got["queries"]) == _numbers(expected["queries"])
    hist = got["queries"][2]
    assert hist["suppressed"] and not all(hist["complete"])
    assert np.isclose(got["queries"][1]["mean"][0], 53.0972972972973, rtol=1e-9)
    assert report.exit_code == 0, report.output
    assert json.loads((out / "results.json").read_text())["name"] == "heart-analytics"
    assert "suppressed" in (out / "report.html").read_text()
