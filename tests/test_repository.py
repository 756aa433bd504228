"""Repository-level promises: the public API, README and CI agree (the import direction is
checked by import-linter's contracts: tests/test_architecture.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import fedcare

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "fedcare"


def test_public_api_is_exactly_all() -> None:
    import types

    exported = set(fedcare.__all__)
    assert len(exported) == len(fedcare.__all__), "duplicates in __all__"
    for name in fedcare.__all__:
        assert getattr(fedcare, name) is not None, name
    # Anything public at the top level that is not a subpackage must be listed in __all__.
    public = {
        n
        for n, v in vars(fedcare).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"
    }
    assert public <= exported, sorted(public - exported)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_core_imports_without_heavy_extras() -> None:
    for path in SRC.rglob("*.py"):
        if path.name in ("torch.py", "torch_nets.py", "torch_dp.py", "torch_runtime.py"):
            continue
        top = {m.split(".")[0] for m in _imports(path)}
        assert not top & {"torch", "tenseal", "ray", "opacus"}, path


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    command = ci.split("# README test command:\n", 1)[1].strip().splitlines()[0]
    assert command in readme


def test_no_dataset_files_are_committed() -> None:
    pattern = re.compile(r"\.(npz|fst|csv\.gz)$|processed\.[a-z]+\.data$|brca\.csv$")
    tracked = [
        p
        for p in REPO.rglob("*")
        if p.is_file()
        and ".venv" not in p.parts
        and ".git" not in p.parts
        and ".pytest_cache" not in p.parts
    ]
    assert not [p for p in tracked if pattern.search(p.name)]


def test_the_readme_keeps_federation_folders_outside_the_checkout() -> None:
    """The CA key and the coordinator's database belong outside the checkout (and git ignores
    them inside it); the README's commands say where."""
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^fedcare .*$", readme, flags=re.MULTILINE)
    folders = [
        m.group(2)
        for line in commands
        for m in re.finditer(r"(--home|--kit|--federation|provision \w[\w-]*) (\S+)", line)
    ]
    assert len(folders) >= 10, folders
    inside = [f for f in folders if not f.startswith(("~", "/")) and f != "STUDY_ID"]
    assert not inside, f"README federation folders inside the checkout: {inside}"
    ignored = (REPO / ".gitignore").read_text().split()
    assert {"/fed/", "/coord/", "/runs/"} <= set(ignored)
