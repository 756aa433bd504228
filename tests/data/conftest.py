"""Shared fixtures for the data tests: the offline mirror and a throw-away cache.

The mirror is ``shared/datasets`` beside the repository root (``<somewhere>/main`` next to
``<somewhere>/shared``). Tests that need it skip, saying why, when it is not there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from fedcare.data.source import forget_failed_hosts

REPO_ROOT = Path(__file__).resolve().parents[2]
MIRROR = (REPO_ROOT / ".." / "shared" / "datasets").resolve()

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _fresh_network_memory() -> Iterator[None]:
    """Each test starts without remembered unreachable hosts."""
    forget_failed_hosts()
    yield
    forget_failed_hosts()


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline mirror folder; skips the test when it is missing.

    ``shared/datasets`` beside the repository root, else ``$FEDCARE_DATA_MIRROR``.
    """
    for path in (MIRROR, Path(os.environ.get("FEDCARE_DATA_MIRROR", MIRROR))):
        if path.is_dir():
            return path
    pytest.skip(
        f"offline data mirror not found at {MIRROR} (shared/datasets beside the repository "
        "root) nor in FEDCARE_DATA_MIRROR"
    )


@pytest.fixture(scope="session")
def load_from_mirror(
    mirror: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., object]:
    """Call a loader with the mirror, a session-wide temporary cache and downloads off.

    The environment is set only for the duration of the call.
    """
    cache = tmp_path_factory.mktemp("fedcare-cache")

    def load(loader: Callable[..., T], **options: object) -> T:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FEDCARE_DATA_MIRROR", str(mirror))
            mp.setenv("FEDCARE_CACHE", str(cache))
            mp.setenv("FEDCARE_OFFLINE", "1")
            return loader(**options)

    return load
