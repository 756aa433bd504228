"""Helpers for the example study packages under examples/packages/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from fedcare.models.base import ModelAdapter
from fedcare.records.package import PackageManifest

PACKAGES = Path(__file__).resolve().parents[2] / "examples" / "packages"


def load_example(name: str, **options: Any) -> ModelAdapter:
    """The adapter of ``examples/packages/<name>``, built from its entry point with ``options``.

    Imported as a package does it in a simulation: from the folder, under a module name of its
    own, the entry point called with the study's options.
    """
    folder = PACKAGES / name
    manifest = PackageManifest.from_folder(folder)
    module_name = f"_fedcare_example_{manifest.name}_{manifest.module}"
    spec = importlib.util.spec_from_file_location(
        module_name, folder / f"{manifest.module.replace('.', '/')}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # so that the adapter's factory pickles
    spec.loader.exec_module(module)
    entry = getattr(module, manifest.object_name)
    adapter = entry(**options) if callable(entry) else entry
    assert isinstance(adapter, ModelAdapter), type(adapter)
    assert adapter.task == manifest.task
    return adapter
