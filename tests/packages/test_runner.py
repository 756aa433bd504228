"""Study package code in the sandboxed runner: each attack of a malicious package is blocked or
refused with a clear reason, and the runner serves the next call (issue 13 item 5).

The malicious package is ``tests/packages/fixtures/evil``: its ``attack`` option picks what its
``fit`` does. Everything runs for real: bubblewrap, resource limits, a separate process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.models._package_checks import PackageOutputRefused
from fedcare.models.base import LocalTrainSpec
from fedcare.models.package_runner import (
    PackageRunnerError,
    RunnerLimits,
    SandboxedPackage,
)
from fedcare.models.packaged import load_adapter
from fedcare.models.sandboxed_packages import (
    PackageUnavailableError,
    SandboxedPackages,
    measure_start_overhead,
)
from fedcare.packages.sandbox import NOBODY, bwrap_available
from fedcare.packages.store import PackageStore
from fedcare.privacy.dp_sgd import DpSgdSpec
from tests.packages.conftest import EXAMPLE

EVIL = Path(__file__).parent / "fixtures" / "evil"
BWRAP, WHY = bwrap_available()
needs_bwrap = pytest.mark.skipif(not BWRAP, reason=f"bubblewrap unavailable here: {WHY}")
SPEC = LocalTrainSpec(epochs=2, lr=0.5)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> PackageStore:
    store = PackageStore(tmp_path_factory.mktemp("runner-store"))
    store.add_folder(EXAMPLE)
    store.add_folder(EVIL)
    return store


@pytest.fixture(scope="module")
def evil_ref(store: PackageStore) -> str:
    return store.add_folder(EVIL)


def _data(n: int = 40, d: int = 5, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return Dataset(X, (X[:, 0] > 0).astype(np.int64))


def _evil(
    store: PackageStore, ref: str, attack: str, target: str = "", **limits: Any
) -> SandboxedPackage:
    options = {"attack": attack, "target": target}
    return SandboxedPackage(
        store.folder(ref),
        store.manifest(ref),
        options,
        limits=RunnerLimits(**{"call_time_s": 8.0, **limits}),
        mode="require",
    )


def _fit_refused(adapter: SandboxedPackage, error: type[Exception], match: str) -> Exception:
    data = _data()
    params = adapter.init_params(data.input_shape, np.random.default_rng(0))
    with pytest.raises(error, match=match) as info:
        adapter.fit(params, data, SPEC, np.random.default_rng(1))
    # the same proxy serves the next call, from a fresh runner
    scores = adapter.predict(params, data.X)
    assert scores.shape == (40,) and np.all((scores > 0) & (scores < 1))
    adapter.close()
    return info.value


@needs_bwrap
def test_a_good_package_trains_bit_identically_sandboxed_and_in_process(
    store: PackageStore,
) -> None:
    ref = store.add_folder(EXAMPLE)
    sandboxed = SandboxedPackage(store.folder(ref), store.manifest(ref), mode="require")
    local = load_adapter(store.folder(ref), store.manifest(ref))
    data = _data(d=13)
    try:
        rngs = np.random.default_rng([7, 0]), np.random.default_rng([7, 0])
        p_box, p_local = sandboxed.init_params((13,), rngs[0]), local.init_params((13,), rngs[1])
        assert p_box == p_local and rngs[0].random() == rngs[1].random()
        spec = LocalTrainSpec(epochs=2, batch_size=8, lr=0.1)
        rngs = np.random.default_rng(3), np.random.default_rng(3)
        fit_box = sandboxed.fit(p_box, data, spec, rngs[0])
        fit_local = local.fit(p_local, data, spec, rngs[1])
        assert fit_box.params == fit_local.params  # bit for bit
        assert fit_box.metrics == fit_local.metrics and fit_box.num_steps == 10
        assert rngs[0].random() == rngs[1].random()  # the caller's generator advanced alike
        assert np.array_equal(sandboxed.predict(p_box, data.X), local.predict(p_local, data.X))
        assert sandboxed.loss(p_box, data) == local.loss(p_local, data)
        assert sandboxed.isolation == ("bwrap+uid:65534" if os.getuid() == 0 else "bwrap")
    finally:
        sandboxed.close()


@needs_bwrap
@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ("extra", r"fit: returned params with unexpected arrays \['leak'\]"),
        ("dataset", r"returned params array 'w' as <f8\[40\], the study's template fixed <f8\[5\]"),
        ("dtype", r"returned params array 'w' as <f2\[5\], the study's template fixed <f8\[5\]"),
        ("nan", r"metric 'accuracy' is nan, not a finite number"),
        ("huge", r"metric 'accuracy' is 1e\+12, beyond the allowed magnitude 1e\+09"),
        ("undeclared", r"metric 'row_0' is not declared in its manifest's outputs.metrics"),
    ],
)
def test_outputs_beyond_the_template_and_declared_metrics_are_refused(
    store: PackageStore, evil_ref: str, attack: str, message: str
) -> None:
    _fit_refused(_evil(store, evil_ref, attack), PackageOutputRefused, message)


@needs_bwrap
def test_num_samples_is_the_sites_row_count_not_the_codes(
    store: PackageStore, evil_ref: str
) -> None:
    adapter = _evil(store, evil_ref, "samples")
    data = _data()
    try:
        params = adapter.init_params(data.input_shape, np.random.default_rng(0))
        assert adapter.fit(params, data, SPEC, np.random.default_rng(1)).num_samples == 40
    finally:
        adapter.close()


@needs_bwrap
def test_a_socket_is_unreachable_even_on_localhost(store: PackageStore, evil_ref: str) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        adapter = _evil(store, evil_ref, "socket", f"127.0.0.1:{port}")
        _fit_refused(
            adapter,
            PackageRunnerError,
            r"fit failed: .*(Connection refused|Network is unreachable)",
        )
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected
    finally:
        server.close()


@needs_bwrap
def test_writing_outside_its_scratch_dir_fails(
    store: PackageStore, evil_ref: str, tmp_path: Path
) -> None:
    outside = Path("/var/tmp") / f"fedcare-escaped-{tmp_path.name}"  # writable by anyone
    into_package = store.folder(evil_ref) / "model.py"
    code = into_package.read_bytes()
    for target, why in [(outside, "No such file or directory"), (into_package, "Read-only")]:
        adapter = _evil(store, evil_ref, "write", str(target))
        _fit_refused(adapter, PackageRunnerError, f"fit failed: .*{why}")
    assert not outside.exists() and into_package.read_bytes() == code


@needs_bwrap
def test_the_sites_data_files_are_not_there(store: PackageStore, evil_ref: str) -> None:
    data_file = Path(__file__).resolve()  # any file of this machine outside the runner's view
    adapter = _evil(store, evil_ref, "read", str(data_file))
    _fit_refused(adapter, PackageRunnerError, "FileNotFoundError: .*No such file or directory")


@needs_bwrap
@pytest.mark.parametrize(
    ("attack", "limits", "message"),
    [
        ("memory", {"memory_limit_mb": 1024}, "fit failed: MemoryError"),
        ("bigfile", {"max_file_size_mb": 4}, r"fit failed: OSError: \[Errno 27\] File too large"),
    ],
)
def test_memory_and_file_size_limits_stop_a_hog(
    store: PackageStore, evil_ref: str, attack: str, limits: dict[str, Any], message: str
) -> None:
    _fit_refused(_evil(store, evil_ref, attack, **limits), PackageRunnerError, message)


@needs_bwrap
def test_an_endless_loop_is_stopped_by_the_cpu_limit_then_the_runner_restarts(
    store: PackageStore, evil_ref: str
) -> None:
    adapter = _evil(store, evil_ref, "loop", cpu_time_s=1.0)
    started = time.monotonic()
    err = _fit_refused(adapter, PackageRunnerError, r"the runner died \(cpu-time-limit")
    assert getattr(err, "code", None) == "package-crashed"
    assert time.monotonic() - started < 8


@needs_bwrap
def test_a_call_past_the_wall_clock_limit_kills_the_runner(
    store: PackageStore, evil_ref: str
) -> None:
    adapter = _evil(store, evil_ref, "sleep", call_time_s=1.5)
    err = _fit_refused(adapter, PackageRunnerError, r"fit ran past the time limit of 1.5 s")
    assert getattr(err, "code", None) == "package-timeout"


def _processes_of(uid: int) -> int:
    count = 0
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):  # gone meanwhile
            count += proc.name.isdigit() and proc.stat().st_uid == uid
    return count


@needs_bwrap
@pytest.mark.skipif(os.getuid() != 0, reason="the uid drop (and a clean count) needs root")
def test_a_fork_bomb_is_contained_by_the_process_limit(store: PackageStore, evil_ref: str) -> None:
    before = _processes_of(NOBODY)
    adapter = _evil(store, evil_ref, "fork", max_processes=before + 64)
    _fit_refused(adapter, PackageRunnerError, "Resource temporarily unavailable")
    deadline = time.monotonic() + 5  # the bomb's processes died with the runner
    while _processes_of(NOBODY) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_of(NOBODY) <= before


@needs_bwrap
def test_an_undeclared_import_is_refused_naming_the_module(
    store: PackageStore, evil_ref: str
) -> None:
    adapter = _evil(store, evil_ref, "import")
    message = "package evil 1.0.0 imports 'yaml', which its manifest does not declare"
    _fit_refused(adapter, PackageRunnerError, message)


def test_dp_sgd_is_refused_for_a_package(store: PackageStore, evil_ref: str) -> None:
    adapter = _evil(store, evil_ref, "none")
    spec = LocalTrainSpec(dp=DpSgdSpec(max_grad_norm=1.0, delta=1e-5, noise_multiplier=1.0))
    with pytest.raises(ModelError, match=r"DP-SGD .* is not available for study packages"):
        adapter.fit(
            adapter.init_params((5,), np.random.default_rng(0)),
            _data(),
            spec,
            np.random.default_rng(0),
        )
    adapter.close()


def test_a_package_not_in_the_store_is_unavailable(tmp_path: Path) -> None:
    builder = SandboxedPackages(PackageStore(tmp_path / "empty"))
    spec = {"kind": "package", "package": "sha256:" + "a" * 64, "name": "x", "version": "1"}
    with pytest.raises(PackageUnavailableError, match="is not in the package store") as info:
        builder(spec)
    assert info.value.code == "package-unavailable"
    with pytest.raises(Exception, match="names its package by hash"):
        builder({"kind": "package", "package": str(EXAMPLE)})


def test_sandbox_off_still_runs_the_code_in_a_separate_limited_process(
    store: PackageStore,
) -> None:
    ref = store.add_folder(EXAMPLE)
    builder = SandboxedPackages(store, mode="off")
    try:
        adapter = builder({"kind": "package", "package": ref, "options": {}})
        assert builder({"kind": "package", "package": ref}) is adapter  # one runner per package
        params = adapter.init_params((13,), np.random.default_rng(0))
        assert params.shapes == {"w": (13,), "b": (1,)}
        assert adapter.isolation.startswith("rlimits-only")
    finally:
        builder.close()


@needs_bwrap
def test_the_start_overhead_is_measured(store: PackageStore) -> None:
    ref = store.add_folder(EXAMPLE)
    result = measure_start_overhead(
        store, ref, mode="require", repeats=1, input_shape=(13,), baseline=True
    )
    assert 0 < result["isolation_overhead_s"] < 5 and len(result["samples_s"]) == 1
    assert result["isolation"].startswith("bwrap") and 0 < result["call_s"] < 1
    assert 0 < result["baseline_s"] < 5  # the same runner without bwrap


def test_prefer_without_bwrap_runs_the_runner_under_limits_only(
    store: PackageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    bwrap_available.cache_clear()
    ref = store.add_folder(EXAMPLE)
    adapter = SandboxedPackage(store.folder(ref), store.manifest(ref), mode="prefer")
    try:
        params = adapter.init_params((13,), np.random.default_rng(0))
        assert params.shapes == {"w": (13,), "b": (1,)}
        assert adapter.isolation.startswith("rlimits-only")
        refused = SandboxedPackage(store.folder(ref), store.manifest(ref), mode="require")
        with pytest.raises(PackageRunnerError, match="the site policy requires one") as info:
            refused.init_params((13,), np.random.default_rng(0))
        assert info.value.code == "sandbox-unavailable"
    finally:
        adapter.close()
        bwrap_available.cache_clear()


def test_a_gpu_the_policy_allows_is_bound_into_the_minimal_dev() -> None:
    from fedcare.packages import sandbox

    spec = sandbox.SandboxSpec(minimal_fs=True, devices=("/dev/nvidia0", "/dev/nvidiactl"))
    args = sandbox._bwrap_args(spec)
    at = args.index("/dev/nvidia0")
    assert args[at - 1 : at + 2] == ["--dev-bind-try", "/dev/nvidia0", "/dev/nvidia0"]
    assert args.index("--dev") < at  # on top of bwrap's own minimal /dev


GUARD = """
import sys, types
from fedcare.models._package_worker import allowed_top_level, install_import_guard
from fedcare.records.package import PackageManifest
manifest = PackageManifest(name="p", version="1", entry_point="m:M", task="binary",
                           dependencies=["pandas>=1"])
install_import_guard(manifest, allowed_top_level(manifest))
code = types.ModuleType("fedcare_pkg_abc.m")
exec("import pandas\\nimport json\\nfrom fedcare.records import arrays", code.__dict__)
print("dateutil" in sys.modules, "pytz" in sys.modules or "tzdata" in sys.modules)
try:
    exec("import yaml", code.__dict__)
except ImportError as err:
    print(err)
exec("import yaml", {"__name__": "not_a_package"})  # fedcare's own imports are not checked
print("ok")
"""


def test_the_import_guard_checks_only_the_packages_own_imports() -> None:
    """A declared library's own imports (pandas importing dateutil) pass; the package's
    undeclared import is refused, naming the module."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    result = subprocess.run(
        [sys.executable, "-c", GUARD], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("True")  # pandas' undeclared dependencies were imported
    assert lines[1] == "package p 1 imports 'yaml', which its manifest does not declare"
    assert lines[2] == "ok"


@needs_bwrap
def test_a_torch_package_trains_bit_identically_in_the_sandbox(store: PackageStore) -> None:
    pytest.importorskip("torch")
    ref = store.add_folder(Path(__file__).parent / "fixtures" / "tiny-torch")
    sandboxed = SandboxedPackage(store.folder(ref), store.manifest(ref), mode="require")
    local = load_adapter(store.folder(ref), store.manifest(ref))
    data = _data()
    data = Dataset(data.X.astype(np.float32), data.y)
    spec = LocalTrainSpec(epochs=2, batch_size=16, lr=0.05)
    try:
        start = sandboxed.init_params((5,), np.random.default_rng(1))
        assert start == local.init_params((5,), np.random.default_rng(1))
        box = sandboxed.fit(start, data, spec, np.random.default_rng(2))
        here = local.fit(start, data, spec, np.random.default_rng(2))
        assert box.params == here.params and box.metrics == here.metrics
        assert set(box.metrics) == {"train_loss"}  # allowed though the manifest lists none
    finally:
        sandboxed.close()


ORPHAN = """
import os, sys, threading, time
import numpy as np
from fedcare.data.base import Dataset
from fedcare.models.base import LocalTrainSpec
from fedcare.models.package_runner import SandboxedPackage
from fedcare.packages.store import PackageStore
store = PackageStore(sys.argv[1])
folder, manifest = store.folder(sys.argv[2]), store.manifest(sys.argv[2])
adapter = SandboxedPackage(folder, manifest, {"attack": "sleep"}, mode="off")
params = adapter.init_params((5,), np.random.default_rng(0))
data = Dataset(np.zeros((4, 5)), np.array([0, 1, 0, 1]))
fit = lambda: adapter.fit(params, data, LocalTrainSpec(), np.random.default_rng(0))
threading.Thread(target=fit, daemon=True).start()
time.sleep(1)  # the runner is busy sleeping in fit
print(adapter._runner._popen.pid, flush=True)
os._exit(0)  # no cleanup: the busy runner must not outlive its caller
"""


def test_a_runner_without_bwrap_dies_with_its_caller(store: PackageStore, evil_ref: str) -> None:
    ref = evil_ref
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    result = subprocess.run(
        [sys.executable, "-c", ORPHAN, str(store.root), ref],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    runner = Path(f"/proc/{int(result.stdout.split()[0])}")
    deadline = time.monotonic() + 5
    while runner.exists() and (runner / "stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the runner outlived its caller"
        time.sleep(0.05)


def test_the_wire_keeps_names_shapes_and_dtypes_and_refuses_what_is_not_numbers() -> None:
    from fedcare.errors import ValidationError
    from fedcare.models._package_wire import decode_message, encode_message

    arrays = {
        "scalar": np.array(7, dtype=np.int64),  # a BatchNorm's num_batches_tracked
        "empty": np.zeros((0, 3), dtype=np.float32),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "flags": np.array([True, False]),
    }
    header, back = decode_message(encode_message({"op": "x"}, arrays))
    assert header == {"op": "x"} and list(back) == list(arrays)
    for name, arr in arrays.items():
        assert back[name].shape == arr.shape and back[name].dtype == arr.dtype
        assert np.array_equal(back[name], arr)
    with pytest.raises(ValidationError, match="only numbers travel"):
        encode_message({}, {"o": np.array([object()])})
    good = encode_message({}, {"w": np.zeros(2)})
    with pytest.raises(ValidationError, match="bytes beyond its arrays"):
        decode_message(good + b"x")
    with pytest.raises(ValidationError, match="its bytes are missing"):
        decode_message(good[:-1])
    forged = good.replace(b'"<f8"', b'"|O8"')
    with pytest.raises(ValidationError, match="is not a plain numeric dtype"):
        decode_message(forged)
