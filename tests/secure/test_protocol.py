import json

import numpy as np
import pytest

import fedcare.secure.secagg.server as server_module
from fedcare.errors import AggregationError, ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.secure.secagg import QuantSpec, error_bound
from fedcare.secure.secagg.client import ClientState, SecAggClient
from fedcare.secure.secagg.messages import ServerMessage
from tests.secure.helpers import entropy_for, run_protocol

QUANT = QuantSpec(clip=10.0, bits=32)


def _inputs(n: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"site-{i:02d}": rng.normal(0, 2, size=d) for i in range(n)}


def _check_sum(run_result: object, inputs: dict[str, np.ndarray]) -> None:
    result = run_result
    truth = sum(inputs[s] for s in result.sites)  # type: ignore[attr-defined]
    err = np.abs(result.total - truth).max()  # type: ignore[attr-defined]
    assert err <= error_bound(QUANT, len(result.sites))  # type: ignore[attr-defined]


@pytest.mark.parametrize(("n", "degree", "seed"), [(3, None, 0), (7, None, 1), (30, 6, 2)])
def test_sum_equals_plaintext_within_bound(n: int, degree: int | None, seed: int) -> None:
    inputs = _inputs(n, 257, seed)
    run = run_protocol(inputs, quant=QUANT, degree=degree, seed=seed)
    assert run.result.sites == tuple(sorted(inputs))
    _check_sum(run.result, inputs)


@pytest.mark.parametrize("stage", ["advertise", "share", "mask", "unmask"])
def test_dropouts_up_to_n_minus_t_are_recovered_one_more_fails(stage: str) -> None:
    inputs = _inputs(6, 50)  # complete graph: degree 5, threshold 4, tolerates 2
    ok = run_protocol(inputs, quant=QUANT, drop={stage: {"site-01", "site-04"}})
    assert ok.result.dropped[stage] == ("site-01", "site-04")
    _check_sum(ok.result, inputs)
    if stage in ("advertise", "share", "mask"):
        assert "site-01" not in ok.result.sites
    with pytest.raises(
        AggregationError, match=f"stage '{stage}': 3 of 6 sites remain.*threshold is 4"
    ):
        run_protocol(inputs, quant=QUANT, drop={stage: {"site-00", "site-01", "site-04"}})


def test_dropouts_spread_over_stages_and_sparse_graph() -> None:
    inputs = _inputs(40, 64, seed=3)
    drop = {"share": {"site-03"}, "mask": {"site-10", "site-22", "site-35"}, "unmask": {"site-07"}}
    run = run_protocol(inputs, quant=QUANT, degree=8, drop=drop, seed=3)
    assert len(run.result.sites) == 36  # the unmask dropout's input still counts
    _check_sum(run.result, inputs)


def test_transcript_masked_vectors_are_uncorrelated_with_inputs() -> None:
    inputs = _inputs(5, 4000, seed=4)
    run = run_protocol(inputs, quant=QUANT)
    masked = {
        s: m.payload["masked"]
        for st, s, m in run.transcript
        if st == "mask" and "masked" in m.payload
    }
    assert set(masked) == set(inputs)
    for site, y in masked.items():
        as_float = y.astype(np.float64) / 2.0**64
        corr = abs(float(np.corrcoef(as_float, inputs[site])[0, 1]))
        assert corr < 0.08  # |r| of independent samples, d = 4000: sd 0.016
        assert abs(float(as_float.mean()) - 0.5) < 0.02  # masked values look uniform


def test_coordinator_gets_no_self_mask_shares_of_a_dropped_site() -> None:
    inputs = _inputs(6, 32)
    run = run_protocol(inputs, quant=QUANT, drop={"mask": {"site-02"}})
    names = [n for st, _, m in run.transcript if st == "unmask" for n in m.payload]
    assert not any(n == "b/site-02" for n in names)  # its self-mask can never be removed
    assert sum(n == "sk/site-02" for n in names) >= 4
    assert not any(n.startswith("sk/") and n != "sk/site-02" for n in names)


def test_client_refuses_to_reveal_both_shares_of_a_peer() -> None:
    def both(stage: str, site: str, msg: ServerMessage) -> ServerMessage:
        if stage != "unmask":
            return msg
        header = {"survived": msg.header["survived"], "dropped": ["site-01"]}
        return ServerMessage("unmask", header, msg.payload)

    with pytest.raises(ValidationError, match=r"both the self-mask and the pairwise-key.*site-01"):
        run_protocol(_inputs(4, 8), quant=QUANT, tamper=both)


def test_tampered_share_ciphertext_is_detected() -> None:
    def flip(stage: str, site: str, msg: ServerMessage) -> ServerMessage:
        if stage != "mask":
            return msg
        name = next(iter(msg.payload))
        arr = msg.payload[name].copy()
        arr[-1] ^= 1
        return ServerMessage("mask", msg.header, ArrayRecord({**msg.payload, name: arr}))

    with pytest.raises(ValidationError, match="failed authentication"):
        run_protocol(_inputs(4, 8), quant=QUANT, tamper=flip)


def test_client_state_survives_a_json_round_trip_and_checks_order() -> None:
    client = SecAggClient("a")
    header = {
        "study_id": "s",
        "round": 1,
        "threshold": 2,
        "length": 4,
        "clip": 1.0,
        "bits": 16,
        "point": 1,
        "neighbours": {"b": 2},
    }
    state, _ = client.step(None, ServerMessage("advertise", header), entropy_for(0))
    again = ClientState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    with pytest.raises(ValidationError, match="stage 'unmask' arrived after stage 'advertise'"):
        client.step(again, ServerMessage("unmask", {}), entropy_for(1))
    with pytest.raises(ValidationError, match="version"):
        ClientState.from_dict({**state.to_dict(), "version": 9})


def test_weak_thresholds_are_refused_by_server_and_client() -> None:
    from fedcare.secure.secagg import SecAggServer

    with pytest.raises(AggregationError, match=r"threshold must be in \[4, 6\].*got 3"):
        SecAggServer(QUANT, threshold=3).start("s", 1, [f"s{i}" for i in range(6)], 4, seed=0)
    header = {
        "study_id": "s",
        "round": 1,
        "threshold": 2,
        "length": 4,
        "clip": 1.0,
        "bits": 16,
        "point": 1,
        "neighbours": {"b": 2, "c": 3, "d": 4},
    }
    with pytest.raises(ValidationError, match=r"refuses threshold 2.*\[3, 4\]"):
        SecAggClient("a").step(None, ServerMessage("advertise", header), entropy_for(0))


def test_threaded_unmasking_gives_the_one_thread_sum_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inputs = _inputs(40, 64, seed=5)
    drop = {"mask": {"site-10", "site-22", "site-35"}, "unmask": {"site-07"}}
    one = run_protocol(inputs, quant=QUANT, degree=8, drop=drop, seed=5)
    monkeypatch.setattr(server_module, "PARALLEL_MIN_VALUES", 0)  # threads even for this
    monkeypatch.setattr(server_module, "default_workers", lambda: 3)
    threaded = run_protocol(inputs, quant=QUANT, degree=8, drop=drop, seed=5)
    assert threaded.result.sites == one.result.sites
    assert np.array_equal(threaded.result.total, one.result.total)
    _check_sum(threaded.result, inputs)
    server = server_module.SecAggServer(QUANT, workers=3)
    monkeypatch.setattr(server_module, "PARALLEL_MIN_VALUES", 8_000_000)
    assert server._workers(18, 100_000) == 1  # little work: one thread
    assert server._workers(270, 100_000) == 3
