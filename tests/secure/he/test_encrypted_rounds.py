"""Privacy mode ``encrypted`` driven by the one round loop over an in-memory grid."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip("tenseal", reason="privacy mode 'encrypted' needs the 'he' extra (tenseal)")

from fedcare.data.base import SiteData
from fedcare.data.registry import load_dataset
from fedcare.errors import ConfigError, RoundFailedError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.records.study import StudyConfig
from fedcare.secure.he.ckks import CKKSBackend, error_bound
from fedcare.secure.he.keys import simulation_keys
from fedcare.secure.he.layer import EncryptedSumServer, with_encrypted_sum
from fedcare.simulation.run import grid_for, train_on_grid
from fedcare.site.app import SiteApp
from fedcare.strategy.driver import continue_study, start_study, study_strategy
from fedcare.transport.inmemory import InMemoryGrid

STUDY = {
    "name": "heart-encrypted",
    "dataset": {"name": "heart-disease"},
    "model": {"kind": "logistic"},
    "rounds": 3,
    "training": {"epochs": 1, "lr": 0.1},
    "preprocessing": {"impute": "mean", "scale": "global"},
}
Handler = Callable[[Task], Reply]


@pytest.fixture(scope="module")
def sites() -> list[SiteData]:
    return list(load_dataset("heart-disease").sites)


def _shape(sites: list[SiteData]) -> tuple[int, ...]:
    return sites[0].train.input_shape


def _study(mode: str, **extra: object) -> StudyConfig:
    return StudyConfig.from_dict({**STUDY, **extra, "privacy": {"mode": mode}})


def test_encrypted_study_gives_the_open_model(sites: list[SiteData]) -> None:
    shape = sites[0].train.input_shape
    plain = train_on_grid(grid_for(sites), _study("open"), shape, label="federated")
    grid = grid_for(sites, record=True)
    enc = train_on_grid(grid, _study("encrypted"), shape, label="federated")
    # Each round's mean update errs by at most 2 * error_bound(4) / (total weight / 1000)
    # (sum and weight both perturbed); over 3 rounds of a 1-Lipschitz-ish step, 3x that.
    weight = plain.history[0].fit["total_weight"] / 1000.0
    tol = 3 * 2 * error_bound(len(sites)) / weight
    diff = np.abs(enc.params.flatten() - plain.params.flatten()).max()
    assert diff < tol, (diff, tol)
    fit = enc.history[-1].fit
    assert fit["num_contributions"] == len(sites) and fit["he_expansion"] > 1000
    # what crossed the grid: fit replies carry only ciphertexts, the weight inside them
    fit_replies = [m for m in grid.wire if isinstance(m, Reply) and m.kind == "fit"]
    assert len(fit_replies) == 3 * len(sites)
    for reply in fit_replies:
        assert list(reply.arrays) == ["ct00000"] and reply.arrays["ct00000"].dtype == np.uint8
        assert reply.num_samples == 0
    decrypts = [m for m in grid.wire if isinstance(m, Task) and m.kind == "secagg"]
    assert len(decrypts) == 3 and all(t.config["he_stage"] == "decrypt" for t in decrypts)
    # the only bytes on the wire are ciphertexts (a context, secret or public, is far larger)
    ct_size = len(CKKSBackend.from_bytes(simulation_keys()[0]).encrypt(np.ones(1))[0])
    records = [m.arrays for m in grid.wire if isinstance(m, Reply)]
    records += [r for m in grid.wire if isinstance(m, Task) for r in m.arrays.values()]
    sizes = {a.nbytes for r in records for a in r.values() if a.dtype == np.uint8}
    # (serialized ciphertexts are compressed, so their sizes vary by some bytes; a context is
    # megabytes, so 1 % of a ciphertext tells them apart without flaking on compression)
    slack = max(256, ct_size // 100)
    assert sizes and all(abs(n - ct_size) < slack for n in sizes), (sizes, ct_size)


def test_the_coordinator_side_holds_no_secret_key() -> None:
    strategy = study_strategy(_study("encrypted"), 4)
    protocol = strategy.aggregator.protocol  # type: ignore[attr-defined]
    assert isinstance(protocol, EncryptedSumServer)
    assert not protocol.context.has_secret_key
    secret = CKKSBackend.from_bytes(simulation_keys()[0])
    with pytest.raises(ConfigError, match="holds the secret key; refusing it"):
        EncryptedSumServer(secret)
    with pytest.raises(ConfigError, match=r"no option\(s\) \['bits'\]"):
        with_encrypted_sum(strategy, {"bits": 16}, protocol.context)


def test_sites_with_other_keys_refuse_and_the_round_fails(sites: list[SiteData]) -> None:
    other = CKKSBackend.keygen()
    public = CKKSBackend.public_from_bytes(other.public_bytes())
    strategy = study_strategy(_study("encrypted", rounds=1), 4, he_context=public)
    fingerprint = strategy.aggregator.protocol.spec()["fingerprint"]  # type: ignore[attr-defined]
    grid = InMemoryGrid({s.site_id: SiteApp(s, simulated=True) for s in sites})
    with pytest.raises(RoundFailedError, match=f"HE key fingerprint '{fingerprint}' is not"):
        start = start_study(grid, _study("encrypted"), strategy, "s", sites[0].train.input_shape)
        continue_study(grid, _study("encrypted", rounds=1), strategy, "s", start)


def test_a_failing_decryptor_is_replaced(sites: list[SiteData]) -> None:
    refused: list[str] = []

    def flaky(app: Handler) -> Handler:
        def handle(task: Task) -> Reply:
            if task.kind == "secagg" and not refused:  # the first asked site is away
                refused.append(task.site_id)
                return Reply.failure(task, "offline", "site went away")
            return app(task)

        return handle

    grid = InMemoryGrid({s.site_id: flaky(SiteApp(s, simulated=True)) for s in sites})
    model = train_on_grid(grid, _study("encrypted", rounds=1), _shape(sites), label="federated")
    fit = model.history[0].fit
    assert fit["he_decrypted_by"] != refused[0]
    assert fit["failed_sites"] == {refused[0]: "he decrypt: offline: site went away"}


def test_encrypted_mode_refuses_robust_aggregation_and_scaffold() -> None:
    scaffold = {**STUDY, "privacy": {"mode": "encrypted"}, "strategy": {"name": "scaffold"}}
    with pytest.raises(ConfigError, match="does not support encrypted aggregation"):
        study_strategy(StudyConfig.from_dict(scaffold), 4)
    robust = {**STUDY, "privacy": {"mode": "encrypted"}, "aggregation": [{"name": "median"}]}
    with pytest.raises(ConfigError, match="'encrypted' cannot combine with robust"):
        study_strategy(StudyConfig.from_dict(robust), 4)


def test_a_reply_that_is_not_ciphertexts_is_rejected(sites: list[SiteData]) -> None:
    """A site that sends its update in the clear (a bug or a tampered agent) is left out."""
    leaky = sites[0].site_id

    def leak(app: Handler) -> Handler:
        def handle(task: Task) -> Reply:
            reply = app(task)
            if task.kind == "fit":
                arrays = ArrayRecord({**reply.arrays, "plain": np.ones(13)})
                return dataclasses.replace(reply, arrays=arrays)
            return reply

        return handle

    apps = {s.site_id: SiteApp(s, simulated=True) for s in sites}
    grid = InMemoryGrid({k: leak(a) if k == leaky else a for k, a in apps.items()})
    model = train_on_grid(grid, _study("encrypted", rounds=1), _shape(sites), label="federated")
    fit = model.history[0].fit
    assert leaky not in fit["contributing_sites"] and fit["num_contributions"] == 3
    assert "'plain' (float64(13,)) is not a ciphertext" in fit["failed_sites"][leaky]


def test_decrypting_sites_that_disagree_fail_the_round(sites: list[SiteData]) -> None:
    liar = sites[0].site_id

    def lie(app: Handler) -> Handler:
        def handle(task: Task) -> Reply:
            reply = app(task)
            if task.kind == "secagg":
                arrays = ArrayRecord({"sum": reply.arrays["sum"] + 1.0})
                return dataclasses.replace(reply, arrays=arrays)
            return reply

        return handle

    study = _study("open", rounds=1)
    public = CKKSBackend.public_from_bytes(simulation_keys()[1])
    strategy = with_encrypted_sum(study_strategy(study, 4), {"decryptors": 4}, public)
    apps = {s.site_id: SiteApp(s, simulated=True) for s in sites}
    grid = InMemoryGrid({k: lie(a) if k == liar else a for k, a in apps.items()})
    start = start_study(grid, study, strategy, "s", _shape(sites))
    with pytest.raises(RoundFailedError, match=r"decrypting sites .* disagree on the sum"):
        continue_study(grid, study, strategy, "s", start)
