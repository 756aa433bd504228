"""The system benchmark's rows and memory estimate (``benchmarks/system_rows.py``,
``benchmarks/system_estimate.py``): merging into stored rows, target verdicts, the copies a
run is estimated to need and the refusal of a 1B run on a 24 GB machine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from system_estimate import PROFILES, grpc_estimate, inmemory_estimate, parse_copies
from system_rows import merge_rows, row, with_verdicts

ONE_B = 1_000_045_711  # system.SIZES["1B"]: mlp (31,617, 31,617) on 10 features


def _r(method: str, metric: str, value: float | None) -> dict[str, object]:
    return row(method, metric, value, 0.0, 1, "MB", "n")


def test_merge_replaces_same_method_and_metric_keeps_the_rest_in_order() -> None:
    stored = [_r("grpc", "a@1M", 1), _r("inmemory", "a@1M", 2), _r("grpc", "a@100M", 3)]
    merged = merge_rows(stored, [_r("grpc", "a@1M", 10), _r("grpc", "resume@1M", 1.5)])
    assert [(r["method"], r["metric"], r["mean"]) for r in merged] == [
        ("grpc", "a@1M", 10),
        ("inmemory", "a@1M", 2),
        ("grpc", "a@100M", 3),
        ("grpc", "resume@1M", 1.5),
    ]
    assert stored[0]["mean"] == 1  # inputs untouched


def test_verdicts_name_the_target_and_the_value() -> None:
    rows = with_verdicts(
        [
            _r("grpc", "throughput_mb_s@100M", 38.6),
            _r("grpc", "peak_rss_mb@100M", 1200.0),
            _r("grpc", "federation_peak_rss_mb@100M", None),
            _r("inmemory", "peak_rss_mb@100M", 99999.0),
        ]
    )
    notes = [str(r["notes"]) for r in rows]
    assert notes[0].endswith("target >= 300 MB/s: MISSED [38.6 MB/s]")
    assert notes[1].endswith("target <= 1,500 MB: MET [1,200.0 MB]")
    assert notes[2].endswith("target <= 4,000 MB: MISSED [not measured]")
    assert notes[3] == "n"  # the in-memory grid has no target


def test_parse_copies_overrides_single_entries_and_names_a_bad_one() -> None:
    base = PROFILES["streaming"]
    copies = parse_copies("coordinator=1, worker=2", base)
    assert (copies.coordinator, copies.per_site, copies.agent, copies.worker) == (1, 0, 1, 2)
    with pytest.raises(ValueError, match="'gpu=3'"):
        parse_copies("gpu=3", base)
    with pytest.raises(ValueError, match="'lots' is not a number"):
        parse_copies("worker=lots", base)


def test_a_1b_round_does_not_fit_24_gb_with_todays_torch_fit() -> None:
    streaming = grpc_estimate(ONE_B, 2, PROFILES["streaming"], "streaming")
    assert streaming.total_mb == pytest.approx(54_590, abs=50)
    assert next(iter(streaming.parts)) == "coordinator"
    assert streaming.parts["coordinator"] == pytest.approx(660 + 3 * 4000.18 + 2 * 64, abs=1)
    # even with offload at the coordinator and a 2-copy worker it stays above 20 GB
    lean = grpc_estimate(ONE_B, 2, parse_copies("coordinator=1,agent=0,worker=2", PROFILES[
        "streaming"]), "streaming")  # fmt: skip
    assert 20_000 < lean.total_mb < 24_000
    assert "worker 2" in lean.describe()
    assert inmemory_estimate(ONE_B, 2).total_mb > 24_000


def test_the_whole_message_profile_matches_the_measured_100m_federation() -> None:
    estimate = grpc_estimate(100_130_001, 4, PROFILES["whole-message"], "whole-message")
    assert estimate.total_mb == pytest.approx(21_448, rel=0.2)  # measured polled peak
