"""``fedcare`` starts without the heavy libraries (issue 11, item 7: a slow CLI).

Each check runs in a fresh interpreter and reads ``sys.modules``: ``import fedcare``,
``import fedcare.cli.main``, ``fedcare --help`` and the status commands against a real
coordinator home must not import what only training, reports or the servers need. The wall
times themselves are measured by ``benchmarks/cli.py`` (``metric: cli_startup_s``), not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fedcare
from fedcare.coordinator.engine import default_db_url
from fedcare.coordinator.store import CoordinatorStore

SRC = Path(fedcare.__file__).resolve().parents[1]
#: Never needed to start the CLI, print help or the version.
HEAVY = ("sklearn", "scipy", "torch", "ray", "plotly", "grpc", "sqlalchemy", "pandas", "numpy")
#: Never needed by the status commands (they read the coordinator's database: sqlalchemy; a
#: database already at the newest revision is opened without Alembic).
HEAVY_FOR_STATUS = (
    "sklearn",
    "scipy",
    "torch",
    "ray",
    "plotly",
    "grpc",
    "pandas",
    "numpy",
    "alembic",
)

PROBE = """
import json, sys
{body}
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""


def _loaded(body: str) -> set[str]:
    """Top-level packages in ``sys.modules`` after running ``body`` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _run_cli(args: list[str]) -> str:
    return (
        "from fedcare.cli.main import app\n"
        "try:\n"
        f"    app({args!r}, standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
    )


@pytest.mark.parametrize("module", ["fedcare", "fedcare.cli.main"])
def test_import_loads_no_heavy_library(module: str) -> None:
    loaded = _loaded(f"import {module}")
    assert "fedcare" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize(
    "args", [["--help"], ["version"], ["study", "--help"], ["package", "--help"]]
)
def test_help_and_version_load_no_heavy_library(args: list[str]) -> None:
    loaded = _loaded(_run_cli(args))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("command", [["study", "status"], ["sites"]])
def test_status_commands_load_no_heavy_library(tmp_path: Path, command: list[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        store.create_study("startup", {"rounds": 3}, 0)
    loaded = _loaded(_run_cli([*command, "--home", str(home)]))
    assert "sqlalchemy" in loaded  # the command really opened the database
    assert not loaded & set(HEAVY_FOR_STATUS), sorted(loaded & set(HEAVY_FOR_STATUS))


def test_one_studys_status_loads_no_heavy_library(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        study_id = store.create_study("startup", {"rounds": 3}, 0)
    loaded = _loaded(_run_cli(["study", "status", study_id, "--home", str(home)]))
    assert not loaded & set(HEAVY_FOR_STATUS), sorted(loaded & set(HEAVY_FOR_STATUS))


def test_lazy_public_api_resolves_to_the_defining_objects() -> None:
    from fedcare.records import ArrayRecord, Task
    from fedcare.records.arrays import ArrayRecord as Defined
    from fedcare.strategy import FedAvg

    assert fedcare.FedAvg is FedAvg and fedcare.ArrayRecord is ArrayRecord is Defined
    assert isinstance(Task(study_id="s", round=1, site_id="a", kind="fit").params, ArrayRecord)
    assert set(fedcare.__all__) <= set(dir(fedcare))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = fedcare.nope  # type: ignore[attr-defined]


def test_remote_status_loads_no_database_server_nor_heavy_library() -> None:
    # the port is closed: the command fails, after importing all it needs to ask the API
    loaded = _loaded(_run_cli(["study", "status", "--coordinator", "https://127.0.0.1:9"]))
    assert "httpx" in loaded
    assert not loaded & {*HEAVY, "fastapi", "uvicorn"}, sorted(loaded & {*HEAVY, "fastapi"})
