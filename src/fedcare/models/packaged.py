"""Load a stored study package's entry point in this process and build its model adapter.

Only two places call this: a simulation (the study lead runs their own code, in-process) and
the package runner at a site (:mod:`fedcare.models.package_runner`, inside the sandbox). A
site agent never does.

Each package is imported as its own Python package named ``fedcare_pkg_<first 12 hex digits of
its hash>``, so two packages that both have a ``model.py`` never collide, and the same package
loaded twice is imported once. Inside a package, import sibling files relatively
(``from . import layers``).

The entry point (``module:object`` in ``fedcare-package.yaml``) is one of:

- a :class:`~fedcare.models.base.ModelAdapter` subclass, called as ``cls(**options)``;
- a callable returning a ModelAdapter, called as ``obj(**options)``;
- a ModelAdapter instance (the study gives no options).

The adapter's ``task`` must be the manifest's.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ModelError, PackageError
from fedcare.models._package_checks import (
    ALWAYS_ALLOWED_METRICS,
    Template,
    check_loss,
    check_metrics,
    check_num_steps,
    check_params,
    check_scores,
    check_task_params,
    refuse_dp_sgd,
    template_of,
)
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.records.arrays import ArrayRecord
from fedcare.records.package import PackageManifest

__all__ = ["CheckedPackage", "load_adapter", "load_entry", "module_prefix"]


def module_prefix(folder: Path) -> str:
    """The Python package name a stored package is imported under (from its folder name)."""
    return f"fedcare_pkg_{folder.name[:12]}"


def load_entry(folder: str | Path, manifest: PackageManifest) -> Any:
    """Import the package in ``folder`` and return its entry point's object.

    Raises
    ------
    PackageError
        The entry module is missing, fails to import (with the error), or lacks the object.
    """
    folder = Path(folder)
    prefix = module_prefix(folder)
    if prefix not in sys.modules:
        spec = importlib.util.spec_from_loader(prefix, loader=None, is_package=True)
        assert spec is not None
        package = importlib.util.module_from_spec(spec)
        package.__path__ = [str(folder)]
        sys.modules[prefix] = package
    name = f"{prefix}.{manifest.module}"
    where = f"package {manifest.name} {manifest.version}"
    if not (folder / (manifest.module.replace(".", "/") + ".py")).is_file():
        raise PackageError(f"{where}: entry point module {manifest.module!r} has no file")
    try:
        module = importlib.import_module(name)
    except Exception as err:
        raise PackageError(
            f"{where}: importing {manifest.module!r} failed: {type(err).__name__}: {err}"
        ) from err
    obj: Any = module
    for part in manifest.object_name.split("."):
        if not hasattr(obj, part):
            raise PackageError(
                f"{where}: entry point {manifest.entry_point!r}: {manifest.module!r} has no "
                f"{manifest.object_name!r}"
            )
        obj = getattr(obj, part)
    return obj


class CheckedPackage(ModelAdapter):
    """A package's adapter in this process, its outputs checked as a site's runner checks them
    (:mod:`fedcare.models._package_checks`): a simulation refuses what a deployment would,
    and in the same words, before the study lead takes the package to the sites."""

    def __init__(self, inner: ModelAdapter, manifest: PackageManifest) -> None:
        self.inner = inner
        self.__dict__["task"] = manifest.task
        self.where = f"package {manifest.name} {manifest.version}"
        self.metrics = frozenset({*manifest.outputs.metrics, *ALWAYS_ALLOWED_METRICS})
        self.template: Template | None = None

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        params = self.inner.init_params(input_shape, rng)
        if self.template is None:
            self.template = template_of(params, self.where)
        else:
            check_params(params, self.template, f"{self.where} init_params")
        return params

    def fit(
        self, params: ArrayRecord, data: Dataset, spec: LocalTrainSpec, rng: np.random.Generator
    ) -> FitResult:
        refuse_dp_sgd(spec.dp, self.where)
        if self.template is None:  # fixed by an init on the same inputs (its shapes only)
            self.init_params(data.input_shape, np.random.default_rng(0))
        assert self.template is not None
        check_task_params(params, self.template, self.where)
        out = self.inner.fit(params, data, spec, rng)
        where = f"{self.where} fit"
        dtypes = {k: v.dtype.str for k, v in params.items()}
        check_params(out.params, self.template, where, also=dtypes)
        steps = check_num_steps(out.num_steps, where)
        metrics = check_metrics(dict(out.metrics), self.metrics, where)
        return FitResult(out.params, len(data), steps, metrics)  # rows: never the code's

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        scores = self.inner.predict(params, X)
        return check_scores(scores, len(X), self.task, f"{self.where} predict")

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        return check_loss(self.inner.loss(params, data), f"{self.where} loss")


def load_adapter(
    folder: str | Path, manifest: PackageManifest, options: Mapping[str, Any] | None = None
) -> ModelAdapter:
    """The model adapter of the package in ``folder``, built with the study's ``options``.

    Raises
    ------
    PackageError
        The entry point cannot be imported, is not a ModelAdapter (class, factory or
        instance), or its task is not the manifest's.
    ModelError
        The entry point refused the options (its message).
    """
    obj = load_entry(folder, manifest)
    options = dict(options or {})
    where = f"package {manifest.name} {manifest.version}: entry point {manifest.entry_point!r}"
    if isinstance(obj, ModelAdapter):
        if options:
            raise PackageError(f"{where} is an adapter instance and takes no options {options}")
        adapter: Any = obj
    elif callable(obj):
        try:
            adapter = obj(**options)
        except TypeError as err:
            raise ModelError(f"{where} refused the study's options {options}: {err}") from err
    else:
        raise PackageError(f"{where} is a {type(obj).__name__}, not a ModelAdapter or factory")
    if not isinstance(adapter, ModelAdapter):
        raise PackageError(
            f"{where} returned a {type(adapter).__name__}, not a fedcare ModelAdapter"
        )
    if getattr(adapter, "task", None) != manifest.task:
        raise PackageError(
            f"{where}: the adapter's task is {getattr(adapter, 'task', None)!r}, the manifest "
            f"declares {manifest.task!r}"
        )
    return adapter
