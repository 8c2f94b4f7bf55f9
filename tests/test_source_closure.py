"""The helper code a method's stored results are keyed on: the project modules it imports, transitively, and the rest
of its own module, so that editing a helper invalidates the methods that call it and only those."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from benchmark.methods import get_method
from benchmark.running.source_closure import closure, closure_hash
from benchmark.running.store import helpers_hash


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    pkg.mkdir(exist_ok=True)
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return pkg


FILES = {"__init__.py": "",
         "a.py": """
             def run():
                 from pkg.b import helper  # a lazy import is followed too
                 return helper()
             """,
         "b.py": "from . import c\n\ndef helper():\n    return c.VALUE\n",
         "c.py": "VALUE = 1\n",
         "d.py": "UNRELATED = 1\n",
         "e.py": "import pkg.covered\n",
         "covered.py": "import pkg.d\n"}


def _closure(pkg: Path, name: str, covered=lambda path: False) -> list[str]:
    return closure(pkg / f"{name}.py", f"pkg.{name}", covered=covered, package_dir=pkg, package="pkg")


def test_the_closure_follows_absolute_relative_and_lazy_imports(tmp_path):
    pkg = _package(tmp_path, FILES)
    assert _closure(pkg, "a") == ["pkg", "pkg.b", "pkg.c"]
    assert _closure(pkg, "e") == ["pkg", "pkg.covered", "pkg.d"]


def test_a_covered_module_is_neither_listed_nor_followed(tmp_path):
    pkg = _package(tmp_path, FILES)
    assert _closure(pkg, "e", covered=lambda path: path.name == "covered.py") == ["pkg"]


def test_the_hash_changes_with_an_imported_helper_and_not_with_an_unrelated_module(tmp_path):
    pkg = _package(tmp_path, FILES)
    def digest():
        closure_hash.cache_clear()
        return closure_hash(pkg / "a.py", "pkg.a", lambda path: False, pkg, "pkg")

    before = digest()
    (pkg / "d.py").write_text("UNRELATED = 2\n", encoding="utf-8")
    assert digest() == before
    (pkg / "c.py").write_text("VALUE = 2\n", encoding="utf-8")
    assert digest() != before


METHODS = '''
from benchmark.methods.base import AttributionMethod, Capabilities

def _scale():
    return {scale}


class HelperProbeA(AttributionMethod):
    """A throwaway method that calls a module-level helper."""

    name = "HelperProbeA"
    family = "control"
    capabilities = Capabilities(control=True, model_independent=True)

    def attribute(self, model, inputs, target, params, **context):
        return inputs.sum(1, keepdim=True) * _scale()


class HelperProbeB(AttributionMethod):
    """Its neighbour in the same module."""

    name = "HelperProbeB"
    family = "control"
    capabilities = Capabilities(control=True, model_independent=True)

    def attribute(self, model, inputs, target, params, **context):
        return inputs.mean(1, keepdim={keepdim})
'''


def _helpers_of_probe_a(tmp_path: Path, scale: int, keepdim: bool) -> str:
    # Hashed while this version is on disk and its module imported, as in a run.
    path = tmp_path / "helper_probe_methods.py"
    path.write_text(METHODS.format(scale=scale, keepdim=keepdim), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("helper_probe_methods", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        return helpers_hash(module.HelperProbeA)
    finally:
        del sys.modules[spec.name]


def test_a_method_is_keyed_on_its_modules_helpers_but_not_on_its_neighbour_methods(tmp_path):
    base = _helpers_of_probe_a(tmp_path, scale=1, keepdim=True)
    helper_edited = _helpers_of_probe_a(tmp_path, scale=2, keepdim=True)
    neighbour_edited = _helpers_of_probe_a(tmp_path, scale=1, keepdim=False)
    assert helper_edited != base
    assert neighbour_edited == base


@pytest.mark.parametrize(("method", "helper"), [("AttnLRP", "benchmark.methods._attention"),
                                                ("Occlusion", "benchmark.methods._captum")])
def test_registered_methods_trace_their_helpers_outside_the_grading_code(method, helper):
    module = sys.modules[get_method(method).__module__]
    listed = closure(Path(module.__file__), module.__name__)
    assert helper in listed
    assert "benchmark.methods._attention" not in closure(Path(sys.modules[get_method("Saliency").__module__].__file__),
                                                          get_method("Saliency").__module__)
