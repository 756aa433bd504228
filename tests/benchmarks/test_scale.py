"""The scale benchmark (``benchmarks/scale.py``, ``benchmarks/scale_sites.py``): a quick run of
the many-site parts at a few sites, its rows, the rows it keeps, and its refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import scale
from scale_sites import ray_unavailable

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def test_a_quick_run_writes_round_rows_and_keeps_the_rows_not_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scale.json"
    kept = {"benchmark": "scale", "dataset": "d", "method": "m", "metric": "speedup", "mean": 1}
    out.write_text(json.dumps([kept]))
    argv = ["--parts", "round,train1000", "--sites", "3", "--train-sites", "4"]
    argv += ["--backends", "inmemory,ray", "--site-rounds", "2", "--out", str(out)]
    assert scale.main(argv) == 0
    rows = json.loads(out.read_text())
    assert rows[0] == kept
    by_metric = {r["metric"]: r for r in rows[1:] if r["method"] == "inmemory"}
    assert sorted(by_metric) == ["peak_rss_mb@4_train", "round_s@3", "round_s@4_train"]
    echo = by_metric["round_s@3"]
    assert echo["method"] == "inmemory" and echo["n"] == 1 and 0 < echo["mean"] < 30
    assert "1,000,000 float32 parameters" in echo["dataset"]
    assert "peak RSS of the process tree" in echo["notes"]
    peak = by_metric["peak_rss_mb@4_train"]
    assert 20 < peak["mean"] < 2000 and peak["notes"].startswith("MET")
    why = ray_unavailable()
    if why is not None:
        assert f"skipping the ray rows of part round: {why}" in capsys.readouterr().out
        assert {r["method"] for r in rows[1:]} == {"inmemory"}
    else:  # the same three rows from Ray's actors
        ray = sorted(r["metric"] for r in rows[1:] if r["method"].startswith("ray"))
        assert ray == sorted(by_metric)


def test_bad_parts_backends_and_counts_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--parts", "round,fast"], ["--backends", "spark"], ["--sites", "10,0"]):
        with pytest.raises(SystemExit):
            scale.parse_args(argv)
    assert "--backends must be some of ['inmemory', 'parallel', 'ray']" in capsys.readouterr().err
    assert scale.parse_args(["--sites", "10,100"]).sites == [10, 100]
