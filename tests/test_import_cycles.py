"""No import cycles in ``src/fedcare`` (issue 12 item 4).

Every import counts, as import-linter (grimp) sees it: at module top, inside functions and
under ``TYPE_CHECKING``. ``from package import name`` counts as an import of the package *and*
of ``package.name`` (Python runs the package's ``__init__`` either way), so a submodule that
reaches a sibling through its package while the package's ``__init__`` imports that submodule
is a cycle. That is stricter than grimp, so no cycle here means none for import-linter either.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def import_graph(root: Path, top: str) -> dict[str, set[str]]:
    """``module -> modules it imports`` for every module of package ``top`` under ``root``."""
    modules: dict[str, Path] = {}
    for path in (root / top).rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path

    def resolve(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*kept, *([node.module] if node.module else [])])
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target == top or target.startswith(top + "."):
                    found = resolve(target)
                    if found and found != name:
                        edges[name].add(found)
    return {name: edges.get(name, set()) for name in modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_cycles_through_functions_type_checking_and_packages(
    tmp_path: Path,
) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "def f():\n    from pkg.b import g\n",
            "pkg/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg import a\n",
            "pkg/sub/__init__.py": "from pkg.sub.x import X\n",
            "pkg/sub/x.py": "from pkg.sub import y\nX = 1\n",
            "pkg/sub/y.py": "Y = 2\n",
            "pkg/top.py": "from . import sub\n",
        },
    )
    assert cycles(import_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.b"], ["pkg.sub", "pkg.sub.x"]]
    # importing the sibling directly, not through its package, breaks the package cycle
    _write(tmp_path, {"pkg/sub/x.py": "import pkg.sub.y as y\nX = 1\n"})
    assert cycles(import_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.b"]]


def test_src_fedcare_has_no_import_cycles() -> None:
    assert cycles(import_graph(SRC, "fedcare")) == []


def test_the_version_is_a_leaf_that_modules_import_instead_of_the_top_package() -> None:
    import fedcare
    from fedcare._version import __version__

    assert fedcare.__version__ == __version__
    assert import_graph(SRC, "fedcare")["fedcare._version"] == set()
    # `from fedcare import __version__` in a module that fedcare/__init__ loads is a cycle
    readers = [
        str(path.relative_to(SRC))
        for path in sorted((SRC / "fedcare").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        and node.module == "fedcare"
        and any(a.name == "__version__" for a in node.names)
    ]
    assert readers == []
