"""Many simulated sites (issue 17, part 6): a round's tasks share one copy of the global model
(the parallel grid's workers get one copy each: ``test_parallel.py``), and 300 sites run
through the real site logic with the ``echo`` model, which returns the model it got."""

from __future__ import annotations

import numpy as np

from fedcare.data.synthetic import load_synthetic
from fedcare.records.messages import Task
from fedcare.records.study import StudyConfig
from fedcare.simulation.training import grid_for, train_on_grid

SITES, PARAMETERS = 300, 10_000


def _study() -> StudyConfig:
    return StudyConfig.model_validate(
        {
            "name": "many-sites",
            "dataset": {"name": "synthetic", "options": {"num_sites": SITES}},
            "model": {"kind": "echo", "parameters": PARAMETERS},
            "strategy": {"name": "fedavg"},
            "rounds": 2,
            "min_sites": SITES,
            "seed": 0,
            "evaluate_every": 0,
            "baselines": {"local": False, "pooled": False, "cross_site": False},
        }
    )


def test_a_rounds_tasks_share_one_copy_of_the_model_over_300_sites() -> None:
    ds = load_synthetic(num_sites=SITES, n_features=2, rows_per_site=4)
    grid = grid_for(list(ds.sites), record=True, feature_names=ds.feature_names)
    model = train_on_grid(grid, _study(), (2,), label="federated")
    fits = [m for m in grid.wire if isinstance(m, Task) and m.kind == "fit"]
    assert len(fits) == 2 * SITES
    for rnd in (1, 2):
        params = {id(t.params) for t in fits if t.round == rnd}
        assert len(params) == 1  # one object for every site, not one copy per task
    assert [r.fit["num_contributions"] for r in model.history] == [SITES, SITES]
    assert model.history[-1].fit["failed_sites"] == {}
    np.testing.assert_array_equal(model.params["weight"], np.zeros(PARAMETERS, np.float32))
