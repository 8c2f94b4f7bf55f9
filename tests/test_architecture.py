"""The package's import graph has no cycle.

The graph is read from the source (no module is imported): every ``import`` and ``from ... import`` statement, at
module level or inside a function, absolute or relative, that names a module of the package is an edge. A name
imported from a package (``from benchmark import report``) is an edge to the submodule when there is one, else to the
package itself. ``import benchmark.x.y`` is an edge to ``benchmark.x.y`` alone: the package ``__init__`` files Python
runs on the way are left out, or every module of a package would be in a cycle with it. Imports under
``if TYPE_CHECKING:`` count too: they are a dependency of the design even though they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules(package_dir: Path, package: str) -> dict[str, Path]:
    """Module name -> file, for every .py file under ``package_dir`` (a package's name is its ``__init__.py``)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The longest module of the package that ``name`` is or lies in (None: outside the package)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in modules:
            return candidate
    return None


def _targets(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {t for alias in node.names if (t := _owner(alias.name, modules))}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:  # relative: resolved against the importing module's package
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    out = set()
    for alias in node.names:
        # `from pkg import sub` imports the submodule; `from mod import name` imports mod.
        t = _owner(f"{source}.{alias.name}", modules) if alias.name != "*" else _owner(source, modules)
        if t:
            out.add(t)
    return out


def import_graph(package_dir: Path, package: str | None = None) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports anywhere in its source (self-imports left out)."""
    package = package or package_dir.name
    modules = _modules(package_dir, package)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = {t for node in ast.walk(tree) for t in _targets(node, name, is_package, modules)} - {name}
    return graph


def components(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module: each is a knot of modules importing each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the package is small enough for recursion
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
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle (``[a, b, ..., a]``) through each strongly connected component, from its first module."""
    return [_cycle_in(sorted(c)[0], c, graph) for c in components(graph)]


def _cycle_in(start: str, component: set[str], graph: dict[str, set[str]]) -> list[str]:
    # Shortest path from ``start`` back to itself inside the component (breadth first).
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} lies on no cycle of its component")


def describe_cycles(graph: dict[str, set[str]]) -> str:
    """A shortest cycle per knot of modules importing each other, and the knot's other modules when it has more."""
    lines = []
    for component in components(graph):
        cycle = _cycle_in(min(component), component, graph)
        lines.append(" -> ".join(cycle))
        if rest := sorted(component - set(cycle)):
            lines.append(f"  (the same knot also holds {', '.join(rest)})")
    return "\n".join(lines)


def test_benchmark_has_no_import_cycle():
    graph = import_graph(ROOT / "benchmark")
    assert "benchmark.reporting.report" in graph and "benchmark.methods.base" in graph  # the walk found the package
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in benchmark/:\n" + describe_cycles(graph)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import g\n\ndef f():\n    return g()\n",
        "pkg/b.py": "def g():\n    from pkg import c\n    return c\n",
        "pkg/c.py": "import pkg.a\n",
        "pkg/d.py": "from pkg import a\n",  # imports into the cycle, not part of it
    })
    graph = import_graph(pkg)
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]], describe_cycles(graph)
    assert describe_cycles(graph) == "pkg.a -> pkg.b -> pkg.c -> pkg.a"


def test_the_message_names_every_module_of_a_knot_and_each_knot(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n", "pkg/b.py": "import pkg.a\nimport pkg.c\n", "pkg/c.py": "import pkg.b\n",
        "pkg/x.py": "from . import y\n", "pkg/y.py": "from .x import f\n",
    })
    graph = import_graph(pkg)
    assert describe_cycles(graph).splitlines() == [
        "pkg.a -> pkg.b -> pkg.a", "  (the same knot also holds pkg.c)", "pkg.x -> pkg.y -> pkg.x"]


@pytest.mark.parametrize("statement", [
    "from . import a",  # relative, names a submodule
    "from .a import f",  # relative, names a function
    "from .. import a",  # two levels up, from a subpackage
    "import pkg.a as alias",
    "from pkg.a import *",
])
def test_every_import_form_is_an_edge(tmp_path, statement):
    sub = "pkg/sub/b.py" if ".." in statement else "pkg/b.py"
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "", "pkg/sub/__init__.py": "",
        "pkg/a.py": "def f():\n    import pkg.sub.b\n    from pkg import b\n",
        sub: statement + "\n",
    })
    graph = import_graph(pkg)
    owner = "pkg.sub.b" if ".." in statement else "pkg.b"
    assert "pkg.a" in graph[owner]
    assert find_cycles(graph), graph


def test_an_acyclic_package_passes(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import f\n",
        "pkg/a.py": "from pkg import b\n\ndef f():\n    from pkg.sub import c\n",
        "pkg/b.py": "import os\n",
        "pkg/sub/__init__.py": "from .c import x\n",
        "pkg/sub/c.py": "import pkg.b\nx = 1\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.a"} and graph["pkg.sub"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.b"}
    assert find_cycles(graph) == []
