"""The layers hold: import-linter's contracts (pyproject.toml) pass on the tree, a deliberate
violation breaks them, and the import graph of src/fedcare has no cycle.

docs/architecture.md describes the layers; `lint-imports` runs in CI next to ruff and mypy.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
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
            "Outer layers: cli/dashboard -> simulation -> coordinator | site -> transport"
            " -> core BROKEN",
            "fedcare.models -> fedcare.transport",
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


def _imported(graph: grimp.ImportGraph, module: str) -> list[str]:
    return sorted(graph.find_modules_directly_imported_by(module))


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """One shortest cycle through each strongly connected component (Tarjan), as module lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(root: str) -> None:
        # iterative Tarjan: (module, iterator over its imports)
        work = [(root, iter(_imported(graph, root)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(_imported(graph, child))))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == module:
                        break
                if len(component) > 1:
                    components.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)

    cycles = []
    for component in components:
        start = min(component)
        # breadth-first from start back to start, inside the component
        previous: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            following = []
            for module in frontier:
                for child in _imported(graph, module):
                    if child == start:
                        found = module
                        break
                    if child in component and child not in previous:
                        previous[child] = module
                        following.append(child)
                if found is not None:
                    break
            frontier = following
        assert found is not None
        path = [found]
        while path[-1] != start:
            path.append(previous[path[-1]])
        cycles.append([*reversed(path), start])
    return sorted(cycles)


def _describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    hops = []
    for importer, imported in itertools.pairwise(cycle):
        details = graph.get_import_details(importer=importer, imported=imported)
        lines = ",".join(str(d["line_number"]) for d in details)
        hops.append(f"{importer} -> {imported} (l.{lines})")
    return "\n  ".join(hops)


def test_the_import_graph_has_no_cycle() -> None:
    # The graph import-linter checks: every import counts, also inside functions and under
    # TYPE_CHECKING.
    graph = grimp.build_graph("fedcare", cache_dir=None)
    assert "fedcare.records" in graph.modules
    cycles = _cycles(graph)
    report = "\n".join(f"cycle {i + 1}:\n  {_describe(graph, c)}" for i, c in enumerate(cycles))
    assert not cycles, f"{len(cycles)} import cycles in src/fedcare:\n{report}"


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.d")
    assert _cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
