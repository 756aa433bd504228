#!/usr/bin/env bash
# Train the ResNet-18 study package (examples/packages/resnet18-pneumonia) on CUDA for a few
# FedAvg rounds over PneumoniaMNIST's 5 simulated sites and print the seconds per round.
#
# Usage: scripts/gpu_check.sh [PYTHON]   (default: .venv/bin/python, else python3)
# Settings (environment): GPU_CHECK_ROUNDS (default 3), GPU_CHECK_WIDTH (default 64: the
# standard ResNet-18), GPU_CHECK_AMP (1: bfloat16 mixed precision, the default; 0: float32),
# GPU_CHECK_DEVICE (default cuda; cpu runs the same check without a GPU, e.g. to test it).
# Where torch sees no CUDA device it prints "skipped: no CUDA" and exits 0 (CI has no GPU).
# A simulation has no site policy to assign the device, so the script passes the package's
# `device` option (the torch adapter otherwise follows FEDCARE_TORCH_DEVICE, which a site sets).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export FEDCARE_DATA_MIRROR="${FEDCARE_DATA_MIRROR:-$(cd .. && pwd)/shared/datasets}"
exec "$PYTHON" - <<'PY'
import os
import statistics
import sys
import time

try:
    import torch
except ImportError:
    print("skipped: no CUDA (torch is not installed: pip install -e '.[torch]')")
    sys.exit(0)
device = os.environ.get("GPU_CHECK_DEVICE", "cuda")
if device.startswith("cuda") and not torch.cuda.is_available():
    print("skipped: no CUDA (torch.cuda.is_available() is False)")
    sys.exit(0)

from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation

rounds = int(os.environ.get("GPU_CHECK_ROUNDS", "3"))
width = int(os.environ.get("GPU_CHECK_WIDTH", "64"))
amp = os.environ.get("GPU_CHECK_AMP", "1") == "1"
study = StudyConfig.from_yaml("examples/packages/resnet18-pneumonia/study.yaml")
options = {"width": width, "device": device, "amp": amp}
study = study.with_overrides(
    model={**study.model, "options": options},
    rounds=rounds,
    evaluate_every=0,
    baselines={"local": False, "pooled": False},
)
name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
print(f"device: {name}; ResNet-18 width {width}, amp {amp}, "
      f"{rounds} rounds of FedAvg over 5 sites ({study.training.max_steps} steps of "
      f"{study.training.batch_size} images per site and round)")
seconds: list[float] = []
last = [time.perf_counter()]


def progress(label, record):
    now = time.perf_counter()
    seconds.append(now - last[0])
    last[0] = now
    print(f"round {record.round}: {seconds[-1]:.2f} s", flush=True)


result = run_simulation(study, progress=progress)
steady = seconds[1:] or seconds
print(f"seconds per round: {statistics.median(steady):.2f} (median of rounds "
      f"{2 if len(seconds) > 1 else 1}..{rounds}; round 1 {seconds[0]:.2f} s includes CUDA start-up)")
print(f"official test split: auroc {result['holdout']['federated']['auroc']:.3f}, "
      f"accuracy {result['holdout']['federated']['accuracy']:.3f}")
PY
