"""Privacy mode ``encrypted`` over real gRPC: a coordinator and 4 heart-disease site agents.

The federation is provisioned with HE keys: site kits hold the secret context, the
coordinator kit only the public one. Sites run tasks in worker processes that load the secret
from their kit. The deployed model must match the plaintext simulation within CKKS precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tenseal", reason="privacy mode 'encrypted' needs the 'he' extra (tenseal)")

from fedcare.secure.he.ckks import error_bound
from fedcare.secure.he.keys import HE_SECRET_FILE
from fedcare.transport.provisioning import create_federation
from tests.conftest import require_mirror
from tests.deployment.helpers import (
    HOSPITALS,
    Kits,
    deployment,
    final_params,
    heart_study,
    simulate,
    submit,
    wait_for_status,
)

pytestmark = pytest.mark.slow


def test_encrypted_study_over_grpc_matches_plaintext_simulation(tmp_path: Path) -> None:
    require_mirror()
    fed = create_federation(
        tmp_path / "federation",
        name="fedcare-he-test",
        sites=HOSPITALS,
        coordinator_hosts=("127.0.0.1",),
        he=True,
    )
    assert not (fed.coordinator_kit / HE_SECRET_FILE).exists()
    kits = Kits(fed.root, fed.coordinator_kit, dict(fed.site_kits))
    study = heart_study(rounds=2, privacy={"mode": "encrypted"})
    with deployment(kits, tmp_path) as running:
        study_id = submit(running.store, study)
        wait_for_status(running.store, study_id, "completed", describe=running.describe)
        rounds = running.store.list_rounds(study_id)
        deployed = final_params(running.store, study_id)
    fit = rounds[-1].record["fit"]
    assert fit["num_contributions"] == len(HOSPITALS)
    assert sorted(fit["contributing_sites"]) == sorted(HOSPITALS)
    assert fit["he_decrypted_by"] in HOSPITALS and fit["he_expansion"] > 1000
    plain = simulate(study.with_overrides(privacy={"mode": "open"}))
    weight = plain.history[0].fit["total_weight"] / 1000.0
    tol = 2 * 2 * error_bound(len(HOSPITALS)) / weight  # 2 rounds (see test_encrypted_rounds)
    for name, value in plain.params.items():
        assert np.abs(np.asarray(deployed[name]) - value).max() < tol, name
