"""The project modules a module imports, transitively, hashed: the helper code a method's maps depend on."""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

PACKAGE = "benchmark"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def module_file(name: str, package_dir: Path = PACKAGE_DIR, package: str = PACKAGE) -> Path | None:
    """The source file of the project module ``name`` (``benchmark.x.y``), or None when it is not one."""
    if name != package and not name.startswith(package + "."):
        return None
    base = package_dir.joinpath(*name.split(".")[1:])
    for path in (base.parent / f"{base.name}.py", base / "__init__.py"):
        # The package itself is its __init__.py, never a benchmark.py that happens to sit beside it.
        if path != package_dir.parent / f"{package_dir.name}.py" and path.is_file():
            return path
    return None


def _with_parents(name: str) -> list[str]:
    # Importing benchmark.x.y runs benchmark/__init__.py and benchmark/x/__init__.py first.
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_modules(path: Path, name: str, package_dir: Path = PACKAGE_DIR, package: str = PACKAGE) -> set[str]:
    """The project modules the module at ``path``, named ``name``, imports anywhere in its body (lazy imports too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = here[:len(here) - node.level + 1] if node.level else []
            module = ".".join([*parts, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # a name may be a submodule
    return {parent for m in found for parent in _with_parents(m)
            if module_file(parent, package_dir, package) is not None}


def closure(path: Path, name: str, *, covered: Callable[[Path], bool] = lambda path: False,
            package_dir: Path = PACKAGE_DIR, package: str = PACKAGE) -> list[str]:
    """Every project module the module at ``path`` (named ``name``, in the project or not) imports, directly or
    through others, except itself and the ``covered`` ones (hashed elsewhere), whose imports are not followed."""
    seen: set[str] = set()
    todo = [(path, name)]
    while todo:
        for dep in imported_modules(*todo.pop(), package_dir, package):
            dep_path = module_file(dep, package_dir, package)
            if dep != name and dep not in seen and not covered(dep_path):
                seen.add(dep)
                todo.append((dep_path, dep))
    return sorted(seen)


@functools.cache
def closure_hash(path: Path, name: str, covered: Callable[[Path], bool], package_dir: Path = PACKAGE_DIR,
                 package: str = PACKAGE) -> str:
    """SHA-256 of the source of every project module in ``closure(path, name)``, by module name."""
    h = hashlib.sha256()
    for module in closure(path, name, covered=covered, package_dir=package_dir, package=package):
        h.update(module.encode())
        h.update(module_file(module, package_dir, package).read_bytes())
    return h.hexdigest()
