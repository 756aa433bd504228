"""Importing torch on demand and seeding its global generator (shared by the torch adapters).

A leaf of :mod:`fedcare.models`: :mod:`~fedcare.models.torch` and
:mod:`~fedcare.models.torch_dp` both import it, neither imports the other at module level.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import numpy as np

from fedcare.errors import ModelError

__all__ = ["draw_seed", "import_torch", "seeded"]


def import_torch() -> ModuleType:
    """Import and return ``torch``, or raise :class:`ModelError` saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            "PyTorch models need the torch extra: pip install 'fedcare[torch]'"
        ) from exc
    return torch


#: Guards torch's global generator while a section forks, seeds and uses it.
_GLOBAL_RNG_LOCK = threading.Lock()


@contextmanager
def seeded(seed: int | None) -> Iterator[ModuleType]:
    """Torch with its CPU generator seeded to ``seed`` (if given), restored afterwards."""
    torch = import_torch()
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield torch


def draw_seed(rng: np.random.Generator) -> int:
    """One torch seed drawn from ``rng``."""
    return int(rng.integers(2**63 - 1))
