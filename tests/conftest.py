"""Test-wide settings: datasets come from the offline mirror beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIRROR = (REPO / ".." / "shared" / "datasets").resolve()


def pytest_configure(config: pytest.Config) -> None:
    # OpenMP threads (torch, MKL) that wait for each other by spinning: when other processes
    # share the cores (site workers, package runners, a demo's 10 processes, or other jobs on
    # a 2-core CI host), a spinning thread burns the slice its partner needs, and a small CNN's
    # training step gets 5 to 20 times slower (measured on a shared 2-core host: 60 steps of a
    # small CNN took 4.7 to 29 s spinning, 1.1 to 1.4 s passive). Passive only changes how an
    # idle thread waits (it sleeps). Set before torch is imported (test modules are imported
    # after this hook), and inherited by every child process the tests start; package runners
    # get it through their thread variables.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # CI runs in a clean clone with shared/ beside it; tests never touch the user's cache.
    if "FEDCARE_DATA_MIRROR" not in os.environ and MIRROR.is_dir():
        os.environ["FEDCARE_DATA_MIRROR"] = str(MIRROR)
    if "FEDCARE_CACHE" not in os.environ:
        cache = Path(config.rootpath) / ".pytest_cache" / "fedcare-data"
        os.environ["FEDCARE_CACHE"] = str(cache)
    if "FEDCARE_PACKAGE_CACHE" not in os.environ:
        packages = Path(config.rootpath) / ".pytest_cache" / "fedcare-packages"
        os.environ["FEDCARE_PACKAGE_CACHE"] = str(packages)


def require_mirror() -> Path:
    """The dataset mirror folder, or skip the test saying why."""
    path = Path(os.environ.get("FEDCARE_DATA_MIRROR", MIRROR))
    if not path.is_dir():
        pytest.skip(f"dataset mirror {path} not found; set FEDCARE_DATA_MIRROR")
    return path
