"""Run a study package's code isolated: a proxy adapter over a sandboxed runner subprocess.

A deployed site (and the coordinator, for a study's initial parameters) never imports a study
package's code. :class:`SandboxedPackage` is a :class:`~fedcare.models.base.ModelAdapter` whose
``init_params``, ``fit``, ``predict`` and ``loss`` send their arguments over a socket to a
long-lived runner process (:mod:`fedcare.models._package_worker`) started under
:mod:`fedcare.packages.sandbox`:

* **bubblewrap** (the site policy's ``sandbox: prefer`` where it works, ``require``): no
  network; a filesystem of only the system folders, the Python runtime, the package's folder
  (read-only) and a private scratch folder; a private ``/tmp``; none of the site's data files
  (the rows of a call travel over the socket); as root, the code runs as ``nobody``
  (:data:`~fedcare.packages.sandbox.NOBODY`, taken inside bwrap) so that the process limit
  binds it (``RLIMIT_NPROC`` never binds root). ``sandbox: off`` (or ``prefer`` without bwrap)
  still runs the code in this separate process under the limits below, never in the caller;
  :attr:`SandboxedPackage.isolation` says which (``bwrap+uid:65534``, ``rlimits-only``).
* **limits**: memory (``RLIMIT_AS``), file size, processes, CPU seconds per call (a soft
  ``RLIMIT_CPU`` under a hard one for the runner's life), and a wall-clock limit per call past
  which the runner's whole process tree is killed (``package-timeout``). A dead runner is
  started afresh for the next call.

What comes back is parsed as JSON and raw arrays (never unpickled) and checked outside the
code (:mod:`fedcare.models._package_checks`): the parameters must match, exactly, the template
``init_params`` fixed (names, shapes, dtypes; finite); ``num_samples`` is ``len(data)``, never
the code's; ``num_steps`` a positive integer; metrics finite scalars, named in the manifest's
``outputs.metrics`` (or ``loss``, ``train_loss``), at most 1e9 in magnitude; predictions in
the task's shape; the loss finite. The caller's generator state goes with each call and comes
back, so the runner draws exactly what the in-process adapter (a simulation) would: both give
the same model. DP-SGD is refused (it would run inside the package's code); a study wanting DP
uses the privacy mode ``private``, whose noise the site adds after the proxy returns.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import ModelError, ValidationError
from fedcare.models import _package_checks as checks
from fedcare.models._package_process import PackageRunnerError, RunnerLimits, RunnerProcess
from fedcare.models._package_wire import generator_from_state, rng_state, spec_to_wire
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.packages.sandbox import SandboxMode
from fedcare.records.arrays import ArrayRecord
from fedcare.records.package import PackageManifest

__all__ = ["PackageRunnerError", "RunnerLimits", "SandboxedPackage"]


class SandboxedPackage(ModelAdapter):
    """A study package's adapter whose code runs in a sandboxed runner (module docstring).

    Parameters
    ----------
    folder:
        The stored, verified package (:meth:`fedcare.packages.store.PackageStore.folder`).
    manifest:
        Its manifest (the task, the declared metrics).
    options:
        The entry point's keyword arguments (the study's ``model.options``).
    limits, mode:
        The runner's resource limits; the sandbox mode (``require`` refuses without bwrap,
        ``prefer`` uses it when it works, ``off`` runs a separate process under the limits).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        manifest: PackageManifest,
        options: Mapping[str, Any] | None = None,
        *,
        limits: RunnerLimits | None = None,
        mode: SandboxMode = "prefer",
    ) -> None:
        self.manifest = manifest
        self.__dict__["task"] = manifest.task
        self.where = f"package {manifest.name} {manifest.version}"
        self.limits = limits or RunnerLimits()
        self.metrics = frozenset({*manifest.outputs.metrics, *checks.ALWAYS_ALLOWED_METRICS})
        self.template: checks.Template | None = None
        self._runner = RunnerProcess(Path(folder), options or {}, self.limits, mode)
        self._lock = threading.Lock()

    @property
    def isolation(self) -> str:
        """What the runner got: ``bwrap+uid:65534``, ``bwrap``, ``rlimits-only``, ..."""
        return self._runner.isolation

    def close(self) -> None:
        """Stop the runner (the next call starts a new one)."""
        with self._lock:
            self._runner.stop()

    def _call(
        self, header: dict[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        with self._lock:
            self._runner.start()
            # after any failure the runner is replaced: nothing the code left behind (processes,
            # threads, patched modules) reaches the next call
            try:
                return self._runner.call(header, arrays, self.limits.call_time_s)
            except PackageRunnerError as err:
                self._runner.stop()
                raise PackageRunnerError(f"{self.where}: {err}", err.code) from None
            except ValidationError as err:  # a malformed message
                self._runner.stop()
                raise checks.PackageOutputRefused(f"{self.where}: {err}") from None

    def _with_rng(
        self, header: dict[str, Any], arrays: Mapping[str, np.ndarray], rng: np.random.Generator
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        out, result = self._call({**header, "rng": rng_state(rng)}, arrays)
        after = generator_from_state(out.get("rng"))  # checked before the caller's is set
        if after.bit_generator.state["bit_generator"] != rng_state(rng)["bit_generator"]:
            raise checks.PackageOutputRefused(f"{self.where}: returned another bit generator")
        rng.bit_generator.state = after.bit_generator.state
        return out, result

    @contextlib.contextmanager
    def _fresh_after_failure(self) -> Iterator[None]:
        """A refused output also replaces the runner (see ``_call``)."""
        try:
            yield
        except Exception as err:
            self.close()
            if isinstance(err, (ModelError, ValidationError)):  # for the reply and the audit
                err.__dict__["isolation"] = self.isolation
            raise

    def init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        with self._fresh_after_failure():
            return self._init_params(input_shape, rng)

    def _init_params(self, input_shape: tuple[int, ...], rng: np.random.Generator) -> ArrayRecord:
        header = {"op": "init_params", "input_shape": [int(d) for d in input_shape]}
        _, arrays = self._with_rng(header, {}, rng)
        params = ArrayRecord(arrays).unprefixed("params")
        if self.template is None:
            self.template = checks.template_of(params, self.where)
        else:
            checks.check_params(params, self.template, f"{self.where} init_params")
        return ArrayRecord(params)

    def _template(self, data: Dataset) -> checks.Template:
        if self.template is None:  # fixed by an init on the same inputs (its shapes only)
            self.init_params(data.input_shape, np.random.default_rng(0))
        assert self.template is not None
        return self.template

    def fit(
        self, params: ArrayRecord, data: Dataset, spec: LocalTrainSpec, rng: np.random.Generator
    ) -> FitResult:
        with self._fresh_after_failure():
            return self._fit(params, data, spec, rng)

    def _fit(
        self, params: ArrayRecord, data: Dataset, spec: LocalTrainSpec, rng: np.random.Generator
    ) -> FitResult:
        checks.refuse_dp_sgd(spec.dp, self.where)
        template = self._template(data)
        checks.check_task_params(params, template, self.where)
        fields, spec_arrays = spec_to_wire(spec)
        arrays = {**params.prefixed("params"), **_data_arrays(data), **spec_arrays}
        out, result = self._with_rng({"op": "fit", "spec": fields}, arrays, rng)
        where = f"{self.where} fit"
        others = [k for k in result if not k.startswith("params/")]
        if others:
            raise checks.PackageOutputRefused(f"{where}: returned arrays {others} besides params")
        new = ArrayRecord(result).unprefixed("params")
        # the template's dtypes, or those of the params it was given (aggregation may upcast)
        checks.check_params(new, template, where, also={k: v.dtype.str for k, v in params.items()})
        steps = checks.check_num_steps(out.get("num_steps"), where)
        metrics = checks.check_metrics(out.get("metrics"), self.metrics, where)
        return FitResult(ArrayRecord(new), len(data), steps, metrics)  # rows: never the code's

    def predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        with self._fresh_after_failure():
            return self._predict(params, np.asarray(X))

    def _predict(self, params: ArrayRecord, X: np.ndarray) -> np.ndarray:
        _, result = self._call({"op": "predict"}, {**params.prefixed("params"), "X": X})
        scores = result.get("scores")
        if scores is None or set(result) != {"scores"}:
            raise checks.PackageOutputRefused(f"{self.where} predict: returned no scores")
        return checks.check_scores(scores, len(X), self.task, f"{self.where} predict")

    def loss(self, params: ArrayRecord, data: Dataset) -> float:
        with self._fresh_after_failure():
            return self._loss(params, data)

    def _loss(self, params: ArrayRecord, data: Dataset) -> float:
        arrays = {**params.prefixed("params"), **_data_arrays(data)}
        out, _ = self._call({"op": "loss"}, arrays)
        return checks.check_loss(out.get("loss"), f"{self.where} loss")


def _data_arrays(data: Dataset) -> dict[str, np.ndarray]:
    arrays = {"data/X": np.asarray(data.X), "data/y": np.asarray(data.y)}
    if data.time is not None:
        arrays["data/time"] = np.asarray(data.time)
    return arrays
