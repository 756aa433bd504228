"""The layers hold: import-linter's contracts (pyproject.toml) pass on the tree, a deliberate
violation breaks them. (That the import graph has no cycle, packages included, is
tests/test_import_cycles.py.)

docs/architecture.md describes the layers; `lint-imports` runs in CI next to ruff and mypy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def _lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    """Run `lint-imports` with the repository's contracts on the package found in `src`."""
    exe = Path(sys.executable).parent / "lint-imports"
    command = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    env = dict(os.environ)
    # `src` first: an editable install of fedcare must not shadow the tree under test.
    env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    env["COLUMNS"] = "300"  # one line per contract in the report
    return subprocess.run(
        [*command, "--no-cache"],
        cwd=REPO,  # lint-imports reads the contracts from ./pyproject.toml
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(SRC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "injected", "contract", "chain"),
    [
        (
            "records/__init__.py",
            "import fedcare.coordinator",
            "records imports nothing of fedcare but errors BROKEN",
            "fedcare.records -> fedcare.coordinator",
        ),
        (
            "models/__init__.py",
            "import fedcare.transport",
            "Outer layers: cli -> dashboard -> simulation -> coordinator | site -> inference"
            " -> transport -> core BROKEN",
            "fedcare.models -> fedcare.transport",
        ),
        (
            "dashboard/__init__.py",
            "import fedcare.cli",
            "Outer layers: cli -> dashboard -> simulation -> coordinator | site -> inference"
            " -> transport -> core BROKEN",
            "fedcare.dashboard -> fedcare.cli",
        ),
        (
            "aggregation/__init__.py",
            "import fedcare.strategy",
            "Core: strategy/analytics -> evaluation -> aggregation/secure/privacy/models"
            " -> data | audit | grid | packages -> records -> errors BROKEN",
            "fedcare.aggregation -> fedcare.strategy",
        ),
        (
            "packages/__init__.py",
            "import fedcare.data",
            "Core: strategy/analytics -> evaluation -> aggregation/secure/privacy/models"
            " -> data | audit | grid | packages -> records -> errors BROKEN",
            "fedcare.packages -> fedcare.data",
        ),
        (
            "inference/__init__.py",
            "import fedcare.site",
            "Outer layers: cli -> dashboard -> simulation -> coordinator | site -> inference"
            " -> transport -> core BROKEN",
            "fedcare.inference -> fedcare.site",
        ),
        (
            "coordinator/__init__.py",
            "import fedcare.site",
            "The coordinator and a site meet only through the core and the transport BROKEN",
            "fedcare.coordinator -> fedcare.site",
        ),
    ],
)
def test_a_deliberate_violation_breaks_a_contract(
    tmp_path: Path, module: str, injected: str, contract: str, chain: str
) -> None:
    copy = tmp_path / "src"
    shutil.copytree(SRC / "fedcare", copy / "fedcare", ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "fedcare" / module
    target.write_text(target.read_text() + f"\n{injected}  # deliberate violation\n")
    lines = len(target.read_text().splitlines())

    result = _lint_imports(copy)

    assert result.returncode != 0, result.stdout
    assert contract in result.stdout, result.stdout
    # The report names the injected import, so the copy (not the repository) was checked.
    assert f"{chain} (l.{lines})" in result.stdout, result.stdout


def test_a_top_level_module_outside_every_layer_breaks_the_contract(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(SRC / "fedcare", copy / "fedcare", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "fedcare" / "unplaced.py").write_text('"""A module nobody placed in a layer."""\n')

    result = _lint_imports(copy)

    assert result.returncode != 0, result.stdout
    assert "fedcare.unplaced" in result.stdout, result.stdout
