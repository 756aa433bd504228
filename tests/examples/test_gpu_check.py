"""scripts/gpu_check.sh: skipped without CUDA; on a device it prints the seconds per round."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_mirror

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), sys.executable],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_check_says_skipped_and_succeeds() -> None:
    done = _run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "skipped: no CUDA (torch.cuda.is_available() is False)"


@pytest.mark.slow
def test_the_check_trains_rounds_and_prints_the_seconds_per_round() -> None:
    require_mirror()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    done = _run(GPU_CHECK_DEVICE=device, GPU_CHECK_WIDTH="4", GPU_CHECK_ROUNDS="2")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^round 2: \d+\.\d\d s$", done.stdout, re.MULTILINE), done.stdout
    seconds = re.search(r"seconds per round: (\d+\.\d+)", done.stdout)
    assert seconds is not None and 0 < float(seconds.group(1)) < 120
    auroc = re.search(r"official test split: auroc (\d\.\d+)", done.stdout)
    assert auroc is not None and 0 <= float(auroc.group(1)) <= 1
