"""Helpers for the example study packages under examples/packages/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedcare.models.base import ModelAdapter
from fedcare.models.packaged import load_adapter
from fedcare.packages.store import PackageStore

PACKAGES = Path(__file__).resolve().parents[2] / "examples" / "packages"


def load_example(name: str, **options: Any) -> ModelAdapter:
    """The adapter of ``examples/packages/<name>``, built with ``options`` as a simulation
    builds it: stored by hash in the package store, then imported in-process from there."""
    store = PackageStore()
    ref = store.add_folder(PACKAGES / name)
    return load_adapter(store.folder(ref), store.manifest(ref), options)
