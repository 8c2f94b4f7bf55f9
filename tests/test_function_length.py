"""No function in benchmark/ is longer than 60 lines, from its def line to its last line (issue #27).

A function may be longer only when docs/architecture.md names it, with the reason, under a heading "Long
functions": every `backticked` name in that section (up to the next heading of the same or a higher level)
is an exception, written as the function's name (``render``), its qualified name (``Grader.run``), with its
module (``benchmark.reporting.report.render``) or with its file (``benchmark/reporting/report.py::render``). Without the file
there are no exceptions.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "benchmark"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
MAX_LINES = 60
HEADING = "Long functions"


def function_lengths(package: Path) -> list[tuple[str, int, str, int]]:
    """(file relative to the package's parent, def line, qualified name, lines) of every function in ``package``."""
    found = []

    def visit(node: ast.AST, prefix: str, rel: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                found.append((rel, child.lineno, name, child.end_lineno - child.lineno + 1))
                visit(child, name + ".", rel)
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".", rel)
            else:
                visit(child, prefix, rel)

    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        visit(tree, "", path.relative_to(package.parent).as_posix())
    return found


def allowed_long(doc: Path) -> set[str]:
    """The backticked names under the heading "Long functions" of ``doc`` (empty when there is no such file)."""
    if not doc.exists():
        return set()
    names, level = set(), None
    for line in doc.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^(#+)\s+(.*?)\s*#*\s*$", line)
        if heading:
            depth = len(heading.group(1))
            if level is not None and depth <= level:
                break
            if level is None and heading.group(2).strip().lower() == HEADING.lower():
                level = depth
            continue
        if level is not None:
            names.update(re.findall(r"`([^`]+)`", line))
    return names


def _spellings(rel: str, qualname: str) -> set[str]:
    """Every way docs/architecture.md may name the function ``qualname`` of file ``rel``."""
    module = rel.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    return {qualname, qualname.rsplit(".", 1)[-1], f"{module}.{qualname}", f"{rel}::{qualname}", f"{rel}:{qualname}"}


def too_long(package: Path, allowed: set[str], limit: int = MAX_LINES) -> list[str]:
    """One line per function of ``package`` longer than ``limit`` lines that ``allowed`` does not name."""
    return [f"{rel}:{line} {name} ({n} lines)" for rel, line, name, n in function_lengths(package)
            if n > limit and not _spellings(rel, name) & allowed]


def test_no_function_in_the_package_is_longer_than_the_limit():
    offenders = too_long(PACKAGE, allowed_long(ARCHITECTURE))
    assert not offenders, (
        f"{len(offenders)} function(s) longer than {MAX_LINES} lines; split them, or name each with its reason "
        f"under a '{HEADING}' heading in docs/architecture.md:\n  " + "\n  ".join(offenders)
    )


def _function(name: str, lines: int, indent: str = "") -> str:
    """Source of a function ``lines`` lines long, def line included."""
    body = ["x = 0"] * (lines - 2) + ["return x"]
    return "\n".join([f"{indent}def {name}():"] + [f"{indent}    {s}" for s in body]) + "\n"


def test_the_checker_flags_a_long_function_and_honours_the_exceptions(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "ok.py").write_text(_function("fits", MAX_LINES))
    (pkg / "sub" / "long.py").write_text(
        _function("too_long", MAX_LINES + 1) + "\n\nclass Grader:\n    @staticmethod\n" + _function("run", 71, "    ")
    )
    assert too_long(pkg, set()) == ["pkg/sub/long.py:1 too_long (61 lines)", "pkg/sub/long.py:66 Grader.run (71 lines)"]

    doc = tmp_path / "architecture.md"
    assert allowed_long(doc) == set()  # no file: no exceptions
    doc.write_text("# Architecture\n\nSee `other_function`.\n\n## Long functions\n\n"
                   "- `pkg.sub.long.Grader.run`: one table, read top to bottom.\n\n"
                   "### Details\n\n- `pkg/sub/long.py::too_long` is fine too.\n\n## Imports\n\n`ignored`\n")
    assert allowed_long(doc) == {"pkg.sub.long.Grader.run", "pkg/sub/long.py::too_long"}
    assert too_long(pkg, allowed_long(doc)) == []
    assert too_long(pkg, {"too_long"}) == ["pkg/sub/long.py:66 Grader.run (71 lines)"]
