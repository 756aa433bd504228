"""The package runner: the subprocess, inside the sandbox, that runs a study package's code.

Started by :class:`fedcare.models.package_runner.SandboxedPackage` with one end of a socket
pair (its file descriptor is the only argument). The first message names the package folder,
the entry point's options and the CPU seconds a call may take; the runner imports the package
(:func:`fedcare.models.packaged.load_adapter`) and answers ``{"ok": true, "task": ...}``. Then
each message is one call (``init_params``, ``fit``, ``predict``, ``loss``) to a fresh adapter
(a simulation too builds one per task) with its arrays, answered with the result's arrays,
its JSON fields and the generator state after the call, or ``{"ok": false, "error": <class
name>, "message": ...}``. Messages are :mod:`fedcare.models._package_wire` (JSON and raw
arrays, no pickle).

Before the package is imported, an import guard is installed: an ``import`` made *by the
package's code* (a module named ``fedcare_pkg_*``) of a top-level module that is not in the
standard library, not ``fedcare``, not the package itself and not provided by a distribution
its manifest declares raises ImportError ``package X imports 'requests', which its manifest
does not declare``. Imports made by the libraries it may use (torch importing its own
dependencies) are not checked. The guard runs in the package's own process, so code set on
getting around it can; it catches undeclared dependencies, the sandbox is the boundary.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.metadata
import resource
import sys
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.models._package_wire import (
    decode_message,
    encode_message,
    generator_from_state,
    spec_from_wire,
)
from fedcare.models.base import ModelAdapter
from fedcare.models.packaged import load_adapter
from fedcare.records.arrays import ArrayRecord
from fedcare.records.package import PackageManifest

__all__ = ["allowed_top_level", "install_import_guard", "main"]

_MESSAGE_LIMIT = 400  # characters of an error message that travel back


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def allowed_top_level(manifest: PackageManifest) -> frozenset[str]:
    """Top-level modules the package's code may import: the standard library, fedcare and
    what the distributions its manifest declares provide."""
    from packaging.requirements import Requirement

    declared = {_normalize(Requirement(d).name) for d in manifest.dependencies}
    provided = {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if any(_normalize(d) in declared for d in dists)
    }
    return frozenset({*sys.stdlib_module_names, "fedcare", *declared, *provided})


def install_import_guard(manifest: PackageManifest, allowed: frozenset[str]) -> None:
    """Refuse undeclared imports made by the package's own modules (see the module doc)."""
    original_import = builtins.__import__
    original_import_module = importlib.import_module
    where = f"package {manifest.name} {manifest.version}"

    def check(name: str, importer: Any, level: int) -> None:
        importer_name = importer.get("__name__", "") if isinstance(importer, dict) else ""
        if level or not str(importer_name).startswith("fedcare_pkg_"):
            return
        top = name.partition(".")[0]
        if top not in allowed and not top.startswith("fedcare_pkg_"):
            raise ImportError(f"{where} imports {top!r}, which its manifest does not declare")

    def guarded_import(
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> Any:
        check(name, globals, level)
        return original_import(name, globals, locals, fromlist, level)

    def guarded_import_module(name: str, package: str | None = None) -> Any:
        check(name, sys._getframe(1).f_globals, 1 if name.startswith(".") else 0)
        return original_import_module(name, package)

    builtins.__import__ = guarded_import
    importlib.import_module = guarded_import_module


def _dataset(arrays: dict[str, np.ndarray]) -> Dataset:
    return Dataset(arrays["data/X"], arrays["data/y"], arrays.get("data/time"))


def _params(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(ArrayRecord(arrays).unprefixed("params"))


def _call(
    adapter: ModelAdapter, header: dict[str, Any], arrays: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, Any]]:
    op = header.get("op")
    rng = generator_from_state(header["rng"]) if "rng" in header else None
    out: dict[str, Any]
    if op == "init_params" and rng is not None:
        params = adapter.init_params(tuple(header["input_shape"]), rng)
        out, result = {}, dict(ArrayRecord(params).prefixed("params"))
    elif op == "fit" and rng is not None:
        spec = spec_from_wire(header["spec"], arrays)
        fitted = adapter.fit(_params(arrays), _dataset(arrays), spec, rng)
        metrics = {str(k): _jsonable(v) for k, v in dict(fitted.metrics).items()}
        out = {
            "num_samples": _jsonable(fitted.num_samples),
            "num_steps": _jsonable(fitted.num_steps),
        }
        out["metrics"] = metrics
        result = dict(ArrayRecord(fitted.params).prefixed("params"))
    elif op == "predict":
        out, result = {}, {"scores": np.asarray(adapter.predict(_params(arrays), arrays["X"]))}
    elif op == "loss":
        out, result = {"loss": _jsonable(adapter.loss(_params(arrays), _dataset(arrays)))}, {}
    else:
        raise ValueError(f"unknown runner call {op!r}")
    if rng is not None:
        out["rng"] = rng.bit_generator.state
    return out, result


def _jsonable(value: Any) -> Any:
    """A number the code returned as JSON (numpy scalars included); other things as their
    type's name, for the trusted side to refuse."""
    if isinstance(value, (bool, np.bool_)):
        return f"<{type(value).__name__}>"
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return f"<{type(value).__name__}>"


def _failure(err: BaseException) -> bytes:
    message = str(err)[:_MESSAGE_LIMIT]
    return encode_message({"ok": False, "error": type(err).__name__, "message": message})


def _limit_cpu(seconds: float | None) -> None:
    """Before each call: at most ``seconds`` more CPU time (the soft limit, under the hard
    one the trusted side set for the runner's life); SIGXCPU stops the runner past it."""
    if seconds is None:
        return
    used = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    want = int(used.ru_utime + used.ru_stime + seconds) + 1
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (want, hard))


def _serve(conn: Connection, make: Callable[[], ModelAdapter], cpu_s: float | None) -> None:
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        try:
            header, arrays = decode_message(data)
            _limit_cpu(cpu_s)
            # a fresh adapter per call, as a simulation builds one per task: an adapter that
            # keeps state between calls trains the same model here and in-process
            out, result = _call(make(), header, arrays)
            reply = encode_message({"ok": True, **out}, result)
        except Exception as err:  # the package's error, sent back as text
            reply = _failure(err)
        conn.send_bytes(reply)


def main(fd: int) -> None:
    """The runner's entry point (see the module docstring)."""
    conn = Connection(fd)
    header, _ = decode_message(conn.recv_bytes())
    try:
        folder = Path(header["folder"])
        manifest = PackageManifest.from_folder(folder)
        install_import_guard(manifest, allowed_top_level(manifest))
        make = partial(load_adapter, folder, manifest, header.get("options") or {})
        adapter = make()
    except Exception as err:
        conn.send_bytes(_failure(err))
        return
    conn.send_bytes(encode_message({"ok": True, "task": str(adapter.task)}))
    _serve(conn, make, header.get("cpu_s"))
