"""Test-wide settings: datasets come from the offline mirror beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIRROR = (REPO / ".." / "shared" / "datasets").resolve()


def pytest_configure(config: pytest.Config) -> None:
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
