"""Render docs/methods.md from the registry (``python -m benchmark.methods.docs [--check]``).

:func:`stale_reason` accepts the file when it is exactly what :func:`render` makes for the methods it
documents, all of them registered; a registered method it does not list yet (a new method file) is
named by :func:`undocumented`, which the tests report as a warning, so adding a method stays one file.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import captum

from benchmark.methods import all_methods
from benchmark.methods.base import FAMILIES
from benchmark.methods.captum_coverage import attribution_exports, coverage, coverage_phrase, definition
from benchmark.profiles import REFERENCE_SIZE

ROOT = Path(__file__).resolve().parents[2]
DOCS_PATH = ROOT / "docs" / "methods.md"
REGENERATE = "python -m benchmark.methods.docs"


_INTRO = """
Every map goes through `benchmark.methods.explain`, which sums channels, upsamples layer maps
bilinearly to the input size, seeds each chunk from (seed, chunk start) and leaves the model
unchanged. `cheap` parameters are used by the quick profile, `paper` by the standard and paper
profiles. Pixel sizes (`window`, `stride`, `patch`) are for {size} px images and scale with the
image size. Layer names (`cam_layer`, `inner_layer`) are attributes of the model that name a
module. Add a method by dropping a module with an `@register`ed class into `benchmark/methods/`,
exposing it under the entry-point group `shortcut_bench.methods`, or listing it in
`SHORTCUT_BENCH_METHODS`. This file is generated: `{regenerate}` adds a new method to it, and until
then `tests/test_methods.py` names the method in a warning, never a failure.
"""


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _params(params: dict) -> str:
    return "<br>".join(f"`{k}={v!r}`" for k, v in params.items()) or "–"


def builtin_methods() -> dict:
    """Registered methods defined in this package (user methods from plugins are not documented here)."""
    return {n: c for n, c in all_methods().items() if c.__module__.startswith("benchmark.methods.")}


def _documented(text: str) -> set[str]:
    """Method names in the rows of the methods table (a row is `| `name` | family | ...`)."""
    families = "|".join(re.escape(f) for f in FAMILIES)
    return set(re.findall(rf"^\| `([^`]+)` \| (?:{families}) \|", text, flags=re.M))


def stale_reason(text: str | None = None) -> str | None:
    """Why ``text`` (default: docs/methods.md) is stale: it documents an unregistered method, or differs from what
    render() makes for the methods it documents; None otherwise."""
    if text is None:
        if not DOCS_PATH.exists():
            return f"{DOCS_PATH} does not exist; run `{REGENERATE}`."
        text = DOCS_PATH.read_text()
    present = builtin_methods()
    documented = _documented(text)
    unknown = sorted(documented - set(present))
    if unknown:
        return f"{DOCS_PATH} documents methods that are not registered: {', '.join(unknown)}; run `{REGENERATE}`."
    if text != render({n: c for n, c in present.items() if n in documented}):
        return (f"{DOCS_PATH} differs from what `{REGENERATE}` makes for the methods it documents (a method's "
                f"parameters, capabilities or docstring, or Captum's exports, changed); run `{REGENERATE}`.")
    return None


def documented_methods() -> dict:
    """The registered built-in methods docs/methods.md lists (the repository's own, whatever else is registered)."""
    listed = _documented(DOCS_PATH.read_text())
    return {n: c for n, c in builtin_methods().items() if n in listed}


def undocumented(text: str | None = None) -> list[str]:
    """Registered built-in methods that ``text`` (default: docs/methods.md) does not list yet."""
    text = DOCS_PATH.read_text() if text is None else text
    return sorted(set(builtin_methods()) - _documented(text))


def _method_rows(methods: dict) -> list[str]:
    """The methods table's rows, one per method: name, family, capabilities, batch, parameters, summary, reference."""
    return [
        "| "
        + " | ".join(
            _cell(c)
            for c in (
                f"`{name}`",
                cls.family,
                ", ".join(cls.capabilities.flags()),
                cls.batch_size,
                _params(cls.params["cheap"]),
                _params(cls.params["paper"]),
                cls.summary(),
                cls.reference(),
            )
        )
        + " |"
        for name, cls in methods.items()
    ]


def _coverage_section(methods: dict, phrase: str) -> list[str]:
    """The lines of the section on how much of ``captum.attr`` the methods wrap, and why the rest is left out."""
    rows = coverage(methods)
    is_method = set(attribution_exports())
    method_rows = [row for row in rows if row[0] in is_method]
    other_rows = [row for row in rows if row[0] not in is_method]
    left_out = sum(1 for _, status, _ in method_rows if status != "included")
    out = [
        "",
        f"## Coverage of `captum.attr` (Captum {captum.__version__})",
        "",
        f"The methods above wrap **{phrase}**. {definition()} The other {left_out} are left out for the reason "
        f"given in the first table; the second lists the {len(other_rows)} exports that are not attribution methods. "
        "`tests/test_methods.py` fails when a Captum release adds an export that is in neither list.",
        "",
        "| captum.attr attribution method | status | detail |",
        "|---|---|---|",
    ]
    out += [f"| `{name}` | {status} | {_cell(detail)} |" for name, status, detail in method_rows]
    out += [
        "",
        "| other captum.attr export | status | detail |",
        "|---|---|---|",
    ]
    out += [f"| `{name}` | {status} | {_cell(detail)} |" for name, status, detail in other_rows]
    return out


def _module_notes(methods: dict) -> list[str]:
    """The lines of the section that quotes each method module's docstring."""
    out = [
        "",
        "## Notes by module",
        "",
        "Module docstrings of the method families: why each is set up as it is.",
        "",
    ]
    for module_name in sorted({cls.__module__ for cls in methods.values()}):
        doc = inspect.getdoc(sys.modules[module_name]) or ""
        registered = ", ".join(f"`{n}`" for n, c in methods.items() if c.__module__ == module_name)
        out += [f"### `{module_name}`", "", f"Registers {registered}.", "", doc, ""]
    return out


def render(methods: dict | None = None) -> str:
    """The full text of docs/methods.md for ``methods`` (default: every built-in method)."""
    if methods is None:
        methods = builtin_methods()
    phrase = coverage_phrase(methods)
    out = [
        "# Attribution methods",
        "",
        f"<!-- Generated by `{REGENERATE}` from the registry; do not edit by hand. -->",
        "",
        f"{len(methods)} registered methods, wrapping {phrase} (see the coverage section). "
        + " ".join(_INTRO.format(size=REFERENCE_SIZE, regenerate=REGENERATE).split()),
        "",
        "| method | family | capabilities | batch | cheap params | paper params | summary | reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    out += _method_rows(methods)
    out += _coverage_section(methods, phrase)
    out += _module_notes(methods)
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    if "--check" in argv:
        reason = stale_reason()
        missing = undocumented() if reason is None else []
        if reason is None and not missing:
            return 0
        print(reason or f"{DOCS_PATH} does not list {', '.join(missing)} yet; run `{REGENERATE}`.", file=sys.stderr)
        return 1
    DOCS_PATH.write_text(render())
    print(f"wrote {DOCS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
