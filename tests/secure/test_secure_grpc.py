"""Secure aggregation over real gRPC: a coordinator and 4 heart-disease site agents (mTLS).

Sites run tasks in worker processes, so the client state crosses stage tasks on disk. The
deployed model must match the plaintext simulation within the quantization tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_mirror
from tests.deployment.helpers import (
    HOSPITALS,
    deployment,
    final_params,
    heart_study,
    provision,
    simulate,
    submit,
    wait_for_status,
)

pytestmark = pytest.mark.slow


def test_secure_study_over_grpc_matches_plaintext_simulation(tmp_path: Path) -> None:
    require_mirror()
    study = heart_study(rounds=2, privacy={"mode": "secure"})
    with deployment(provision(tmp_path / "federation"), tmp_path) as running:
        study_id = submit(running.store, study)
        wait_for_status(running.store, study_id, "completed", describe=running.describe)
        rounds = running.store.list_rounds(study_id)
        deployed = final_params(running.store, study_id)
    fit = rounds[-1].record["fit"]
    assert fit["num_contributions"] == len(HOSPITALS)
    assert fit["secagg_threshold"] == 3 and fit["secagg_dropped"]["mask"] == []
    assert sorted(fit["contributing_sites"]) == sorted(HOSPITALS)
    plain = simulate(study.with_overrides(privacy={"mode": "open"}))
    for name, value in plain.params.items():
        assert np.abs(np.asarray(deployed[name]) - value).max() < 1e-6, name
