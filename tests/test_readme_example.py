"""The README's promises, tested: the "Adding a method" example passes the method contract as written, the
section's commands name real options, suites and methods, and the README's Captum coverage figure is the computed one.

The example is loaded the way the README tells a user to load a file from outside the package
(``$SHORTCUT_BENCH_METHODS``) and checked on seeded untrained models of every architecture the quick profile's
contract covers, so no training or cache is needed.
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

from benchmark.data.procedural import generate_procedural
from benchmark.grading.contract import check_method, eval_logits
from benchmark.methods import ENV_VAR, all_methods, unregister
from benchmark.models.arch import build_model
from benchmark.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HEADING = "## Adding a method"
CONTRACT_ARCHS = PROFILES["quick"].contract_archs


def section(text: str, heading: str) -> str:
    """The README text under the one heading that starts with ``heading``, up to the next heading of its level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    assert len(starts) == 1, f"README.md has {len(starts)} headings starting with {heading!r}"
    body = []
    in_code = False
    for line in lines[starts[0] + 1 :]:
        if line.startswith("```"):
            in_code = not in_code
        # A '#' comment inside a code block is not a heading.
        if not in_code and re.match(rf"#{{1,{level}}} ", line):
            break
        body.append(line)
    return "\n".join(body)


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of ``text`` tagged ``language``."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.M | re.S)


def readme_section() -> str:
    return section(README.read_text(encoding="utf-8"), HEADING)


def example() -> tuple[str, str, str]:
    """(code, file name, registered method name) of the section's one Python example."""
    blocks = code_blocks(readme_section(), "python")
    assert len(blocks) == 1, f"the {HEADING!r} section should hold one Python example, found {len(blocks)}"
    code = blocks[0]
    first = code.splitlines()[0]
    assert re.fullmatch(r"# benchmark/methods/\w+\.py", first), f"the example should open with its path: {first!r}"
    names = [
        node.value.value
        for cls in ast.walk(ast.parse(code))
        if isinstance(cls, ast.ClassDef) and any(getattr(d, "id", None) == "register" for d in cls.decorator_list)
        for node in cls.body
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "name" for t in node.targets)
        and isinstance(node.value, ast.Constant)
    ]
    assert len(names) == 1, f"the example should register one method with a literal `name`, found {names}"
    return code, Path(first[2:]).name, names[0]


@pytest.fixture(scope="module")
def loaded_example(tmp_path_factory):
    """The README example written to a temp file and registered through $SHORTCUT_BENCH_METHODS; its method name."""
    from benchmark.methods.docs import documented_methods

    code, filename, name = example()
    if name in all_methods():
        assert name not in documented_methods(), f"the README example's name {name!r} is taken by a shipped method"
        pytest.skip(f"{name} is already registered (a copy of the README example?): test_methods.py checks that one")
    path = tmp_path_factory.mktemp("readme-example") / filename
    path.write_text(code, encoding="utf-8")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a shared 2-core box are many times slower (field notes)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(ENV_VAR, str(path))
            assert name in all_methods(), f"{ENV_VAR}={path} did not register {name}"
            try:
                yield name
            finally:
                unregister(name)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("arch", CONTRACT_ARCHS)
def test_the_readme_example_passes_the_method_contract(loaded_example, arch):
    images, _ = generate_procedural(8, 32, seed=0)
    x = torch.from_numpy(images).float() / 255
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(arch).eval()
    targets = eval_logits(model, x).argmax(1)  # the model's own decisions, as suites/test_method_contract.py does
    violations = check_method(loaded_example, model, x, targets)
    assert not violations, f"the README example on the untrained {arch} violates the contract:\n  " + "\n  ".join(
        violations
    )


def _bench_options() -> set[str]:
    from benchmark.plugin import pytest_addoption

    class Recorder:
        def __init__(self):
            self.names: set[str] = set()

        def getgroup(self, *args, **kwargs):
            return self

        def addoption(self, *names, **kwargs):
            self.names.update(names)

    recorder = Recorder()
    pytest_addoption(recorder)
    return recorder.names


def test_the_sections_commands_name_real_options_suites_and_methods():
    text = readme_section()
    _, filename, name = example()
    options, methods = _bench_options(), set(all_methods()) | {name}
    commands = [
        shlex.split(line, comments=True)
        for block in code_blocks(text, "bash")
        for line in block.splitlines()
        if line.strip().startswith(("pytest", ".venv/bin/pytest"))
    ]
    assert commands, f"the {HEADING!r} section shows no pytest command"
    for argv in commands:
        where = f"README command {shlex.join(argv)!r}"
        for i, token in enumerate(argv[1:], start=1):
            option, _, inline = token.partition("=")
            if token.startswith("--bench"):
                assert option in options, f"{where}: no option {option}"
                if option == "--bench-methods":
                    unknown = set((inline or argv[i + 1]).split(",")) - methods
                    assert not unknown, f"{where}: unknown methods {sorted(unknown)}"
            elif not token.startswith("-") and not argv[i - 1].startswith("--bench"):
                assert (ROOT / token).exists(), f"{where}: no such path {token}"
    # The loading mechanisms and the docs command the section names are the real ones.
    assert f"`{ENV_VAR}=" in text and "`shortcut_bench.methods`" in text
    from benchmark.methods import ENTRY_POINT_GROUP
    from benchmark.methods.docs import REGENERATE, documented_methods

    assert ENTRY_POINT_GROUP == "shortcut_bench.methods" and f"{REGENERATE}`" in text
    # Copying the example to the path it names must not overwrite a shipped (documented) method's file.
    shipped_files = {Path(sys.modules[c.__module__].__file__).name for c in documented_methods().values()}
    assert filename not in shipped_files, f"the README example is named {filename}, a shipped method file"


def test_the_readme_states_the_computed_captum_coverage():
    from benchmark.methods.captum_coverage import PHRASE_PATTERN, coverage_figure
    from benchmark.methods.docs import documented_methods

    text = README.read_text(encoding="utf-8")
    expected = coverage_figure(documented_methods())
    found = [(int(n), int(m)) for n, m in PHRASE_PATTERN.findall(text)]
    assert found, "README.md states no Captum coverage figure ('N of the M attribution methods exported by ...')"
    assert all(f == expected for f in found), f"README.md states {found}; the documented methods wrap {expected}"
    assert "all of Captum" not in text
