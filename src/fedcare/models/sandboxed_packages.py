"""Build ``kind: package`` adapters that run sandboxed, from a package store; time a start.

:class:`SandboxedPackages` is the :data:`~fedcare.models.registry.PackageBuilder` a deployed
site (its worker, over ``STATE/packages``) and the coordinator (for a study's initial
parameters) pass to :func:`~fedcare.models.registry.build_model`: it keeps one
:class:`~fedcare.models.package_runner.SandboxedPackage` (one long-lived runner, one parameter
template) per package hash and options. It only reads the store: fetching and verifying a
package is done before (the site's package check, the coordinator's submission); a package
not stored is refused with ``package-unavailable``.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedcare.errors import PackageError
from fedcare.models.package_runner import RunnerLimits, SandboxedPackage
from fedcare.packages.sandbox import SandboxMode
from fedcare.packages.store import PackageStore, hash_ref

__all__ = ["PackageUnavailableError", "SandboxedPackages", "measure_start_overhead"]


class PackageUnavailableError(PackageError):
    """The task's package is not in the store the runner reads."""

    code = "package-unavailable"


class SandboxedPackages:
    """A package builder over ``store`` (see the module docstring).

    Parameters
    ----------
    store:
        Where the verified packages are (a site: ``PackageStore(STATE / "packages")``).
    limits, mode:
        Every runner's limits and the sandbox mode (the site policy's).
    on_missing:
        Called with ``sha256:<hex>`` for a package not in ``store``, to add it there (e.g. the
        coordinator extracting its stored archive); afterwards the store is asked again.
    max_runners:
        At most this many runners are kept; the least recently used is stopped.
    """

    def __init__(
        self,
        store: PackageStore,
        *,
        limits: RunnerLimits | None = None,
        mode: SandboxMode = "prefer",
        on_missing: Callable[[str], Any] | None = None,
        max_runners: int = 4,
    ) -> None:
        self.store, self.limits, self.mode = store, limits or RunnerLimits(), mode
        self.on_missing, self.max_runners = on_missing, max_runners
        self._adapters: OrderedDict[str, SandboxedPackage] = OrderedDict()
        self._lock = threading.Lock()  # the coordinator's study runners share one builder

    def __call__(self, spec: Mapping[str, Any]) -> SandboxedPackage:
        with self._lock:
            return self._get(spec)

    def _get(self, spec: Mapping[str, Any]) -> SandboxedPackage:
        ref = spec.get("package")
        if not isinstance(ref, str) or not ref.startswith("sha256:"):
            raise PackageError(
                f"a deployed study names its package by hash (sha256:<hex>), got {ref!r}"
            )
        ref = hash_ref(ref)
        options = spec.get("options") or {}
        key = json.dumps([ref, options], sort_keys=True, default=str)
        adapter = self._adapters.get(key)
        if adapter is None:
            adapter = self._adapters[key] = self._build(ref, spec, options)
            while len(self._adapters) > self.max_runners:
                self._adapters.popitem(last=False)[1].close()
        self._adapters.move_to_end(key)
        return adapter

    def _build(self, ref: str, spec: Mapping[str, Any], options: Any) -> SandboxedPackage:
        if not self.store.has(ref) and self.on_missing is not None:
            self.on_missing(ref)
        if not self.store.has(ref):
            raise PackageUnavailableError(
                f"package {ref} ({spec.get('name')} {spec.get('version')}) is not in the "
                f"package store {self.store.root}; it must be fetched and verified first"
            )
        manifest = self.store.manifest(ref)
        for key in ("name", "version", "task"):
            if key in spec and spec[key] != getattr(manifest, key):
                raise PackageError(
                    f"package {ref}: the plan says {key} {spec[key]!r}, its manifest "
                    f"{getattr(manifest, key)!r}"
                )
        folder = self.store.folder(ref)
        return SandboxedPackage(folder, manifest, options, limits=self.limits, mode=self.mode)

    def close(self) -> None:
        """Stop every runner."""
        with self._lock:
            while self._adapters:
                self._adapters.popitem()[1].close()


def measure_start_overhead(
    store: PackageStore,
    ref: str,
    *,
    options: Mapping[str, Any] | None = None,
    mode: SandboxMode = "prefer",
    limits: RunnerLimits | None = None,
    repeats: int = 5,
    input_shape: tuple[int, ...] | None = None,
    baseline: bool = False,
) -> dict[str, Any]:
    """Seconds to start a sandboxed runner for a task after the first: the package already
    stored and verified, a runner started once before (warm file caches), then ``repeats``
    fresh runners each started and the package loaded (median and each). With
    ``input_shape``, also the round trip of one call (``init_params``) to a running runner:
    what a task costs on top when its package's runner is already up (the usual case: a
    runner lives as long as the site's worker). With ``baseline``, also the same runner's
    start without the sandbox (``sandbox: off``: a plain process under resource limits), so
    that what the sandbox itself adds is seen apart from importing the package (torch alone
    takes seconds).

    Returns
    -------
    dict
        ``{"isolation_overhead_s": median start, "samples_s": [...], "call_s": median call
        (None without input_shape), "baseline_s": median start without the sandbox (None
        without baseline), "isolation": "bwrap+uid:65534"}``.
    """
    base = None
    if baseline and mode != "off":
        again = measure_start_overhead(
            store, ref, options=options, mode="off", limits=limits, repeats=repeats
        )
        base = again["isolation_overhead_s"]
    manifest = store.manifest(ref)
    folder = store.folder(ref)
    samples: list[float] = []
    calls: list[float] = []
    isolation = ""
    for i in range(repeats + 1):
        adapter = SandboxedPackage(folder, manifest, options, limits=limits, mode=mode)
        try:
            started = time.perf_counter()
            adapter._runner.start()
            elapsed = time.perf_counter() - started
            if input_shape is not None:
                adapter.init_params(input_shape, np.random.default_rng(0))  # the template
                started = time.perf_counter()
                adapter.init_params(input_shape, np.random.default_rng(0))
                calls.append(time.perf_counter() - started)
            isolation = adapter.isolation
        finally:
            adapter.close()
        if i:  # the first warms the caches
            samples.append(elapsed)
    return {
        "isolation_overhead_s": statistics.median(samples),
        "samples_s": samples,
        "call_s": statistics.median(calls) if calls else None,
        "baseline_s": base,
        "isolation": isolation,
    }
