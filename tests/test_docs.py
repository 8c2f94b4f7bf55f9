"""The README and docs/ keep their promises: the README's shape, links that resolve, and every quoted figure traced to
the file or code it comes from.

Fast tier: no model is trained and no cache is read. The sources are benchmarks/RESULTS.md, the committed baselines,
docs/methods.md (generated; tests/test_methods.py checks it), pyproject.toml, tests/test_stats.py (where the coverage
simulations record what they measured) and values computed here from the code.
"""

from __future__ import annotations

import ast
import json
import re
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
GENERATED = ROOT / "docs" / "methods.md"  # its figures are the registry's; tests/test_methods.py checks them
# The cache folders' READMEs describe what the code writes there, with figures of the committed baselines.
SIDE_READMES = [ROOT / d / "README.md" for d in ("reports", "models", "datasets")]
MAX_README_LINES = 250
SECTIONS = ["Install", "Quickstart", "Reading the results", "Adding a method", "Regression checks in CI",
            "Citation and license"]
OPTIONAL_SECTIONS = {"Documentation": "Citation and license"}  # may appear once, right before the named section
SOURCE_FILES = ["benchmarks/RESULTS.md", "docs/methods.md", "pyproject.toml", "tests/test_stats.py"]
# Modules whose numeric literals are configuration the docs may quote (noise levels, sample counts, floors).
CONFIG_MODULES = ["benchmark/grading/metrics.py", "benchmark/grading/properties.py"]

# Numbers in the docs that are not figures of this project, each with why. Keep it short: a configuration value
# belongs in sources() instead, computed from the code.
NOT_FIGURES = {
    Decimal("89"): "the original study's clean accuracy, quoted from the study (README pitch)",
}


# --- Markdown structure ---------------------------------------------------------------------------------------------

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]+`")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of every Markdown heading outside fenced code."""
    return [(len(m.group(1)), m.group(2).strip()) for m in re.finditer(r"^(#{1,6}) (.+)$", FENCE.sub("", text), re.M)]


def slug(title: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but - and _ dropped, spaces to hyphens."""
    text = title.replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the headings of ``path`` (repeated titles get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for _, title in headings(path.read_text(encoding="utf-8")):
        base = slug(title)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def links(text: str) -> list[str]:
    """Targets of every Markdown link and image outside code."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", prose)


def broken_links(path: Path) -> list[str]:
    """The relative links and anchors in ``path`` that resolve to no file or heading."""
    problems = []
    for target in links(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            problems.append(f"{target}: no heading #{anchor} in {dest.name}")
    return problems


def test_the_readme_is_short_with_its_sections_in_order():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < MAX_README_LINES
    found = [title for level, title in headings(text) if level == 2]
    expected = list(SECTIONS)
    for optional, before in OPTIONAL_SECTIONS.items():
        if optional in found:
            expected.insert(expected.index(before), optional)
    assert found == expected
    assert [title for level, title in headings(text) if level == 1] == ["shortcut-bench"]


@pytest.mark.parametrize("path", [README, *DOCS, *SIDE_READMES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path):
    assert broken_links(path) == []


def test_the_link_checker_catches_a_missing_file_and_a_missing_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A `code` heading: yes\n\n[ok](#a-code-heading-yes) [self](page.md#title) "
                    "[gone](missing.md) [bad](#nowhere) `[in code](missing.md)` [web](https://example.org)\n")
    problems = broken_links(page)
    assert len(problems) == 2 and problems[0].startswith("missing.md: no file")
    assert problems[1] == "#nowhere: no heading #nowhere in page.md"


def test_words_are_defined_before_the_readme_uses_them():
    text = README.read_text(encoding="utf-8")
    pitch = text[: text.index("\n## ")]
    for word in ("**world**", "**arms**", "docs/glossary.md"):
        assert word in pitch, f"the README's pitch should define {word}"
    assert "[method contract](docs/glossary.md)" in text
    glossary = (ROOT / "docs" / "glossary.md").read_text(encoding="utf-8")
    for term in ("world", "arm", "method", "property", "metric", "cell", "control method", "baseline", "skill",
                 "pass level", "effect", "PASS, FAIL, INCONCLUSIVE", "false alarm", "detection limit", "flipped image",
                 "method contract", "training seed, replicate", "profile", "result store", "compare mode",
                 "voting metric"):
        assert f"- **{term}.**" in glossary, f"docs/glossary.md does not define {term!r}"


# --- Quoted figures ----------------------------------------------------------------------------------------------------

NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?(?:e-?\d+)?")
UNIT = re.compile(r"\s?(%|×(?!\s?\d)|x(?![A-Za-z0-9])|ms|min|minutes|s|MB|GB|MiB|KiB|KB|px)(?![A-Za-z])")
SIGNS = "-−+±≈~"
ANY, TIME, SIZE, RATIO = "any", "time", "size", "ratio"
# Text that holds digits but no figure: URLs and link targets, arXiv ids, dates, clock times, dotted versions and
# addresses, and the values given to command-line options (a choice in a command, not a claim).
NOT_PROSE = [
    re.compile(r"\]\([^)]*\)"),
    re.compile(r"\b[a-z]+://\S+"),
    re.compile(r"arXiv:\d{4}\.\d{4,5}"),
    re.compile(r"\b\d{4}-\d{2}-\d{2}\b"),
    re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b"),
    re.compile(r"\b\d+(?:\.\d+){2,}(?::\d+)?"),
    re.compile(r"(?<![\w-])(?:--[a-z][\w-]*|-n)(?:=| )[\w.,@/:-]*\d[\w.,@/:-]*"),
    re.compile(r"^```python\n.*?^```$", re.M | re.S),  # the README's example: tests/test_readme_example.py runs it
]
# A number right after these words is a reference (an issue, a chapter, a volume), not a figure.
REFERENCE = re.compile(r"(?:\bissues?|\bch\.|§|#)\s*(?:\d+,\s*)*$")


def figures(text: str) -> list[tuple[str, Decimal, str]]:
    """(as written, value, unit) of every decimal, number with a unit or sign, and integer >= 10 in ``text``."""
    # Thousands separators are dropped. A number inside an identifier (ResNet-20, x86_64, seed1) is no figure, nor is a
    # year (a bare 19xx or 20xx): citations carry them.
    for pattern in NOT_PROSE:
        text = pattern.sub(" ", text)
    out = []
    for m in NUMBER.finditer(text):
        start, end, raw = m.start(), m.end(), m.group()
        before, after = text[max(0, start - 2) : start].rjust(2), text[end : end + 1]
        if before[1].isalnum() or before[1] in "_./" or (before[1] in "-−" and before[0].isalpha()):
            continue  # part of an identifier, a path or a fraction (ResNet-20, x86_64, 3/4, K−1)
        if after.isalpha() and not UNIT.match(text, end) or after == "_":
            continue  # a number that starts a word (2D, 4x64)
        if REFERENCE.search(text[max(0, start - 20) : start]):
            continue
        unit_match = UNIT.match(text, end)
        unit = unit_match.group(1) if unit_match else ""
        value = Decimal(raw.replace(",", ""))
        signed = before[1] in SIGNS
        if not unit and "," not in raw and re.fullmatch(r"(19|20)\d\d", raw):
            continue  # a year
        if "." in raw or "e" in raw or unit or signed or value >= 10:
            out.append((raw + (unit_match.group(0) if unit_match else ""), value, unit))
    return out


def dimension(unit: str) -> str:
    """What a unit measures: a time, a size or a ratio must come from a source that measured the same kind of thing."""
    return {"s": TIME, "ms": TIME, "min": TIME, "minutes": TIME, "MB": SIZE, "GB": SIZE, "MiB": SIZE, "KiB": SIZE,
            "KB": SIZE, "×": RATIO, "x": RATIO}.get(unit, ANY)


def numbers_in(text: str) -> dict[str, set[Decimal]]:
    """Every number a source ``text`` writes, by dimension (ANY holds them all)."""
    out: dict[str, set[Decimal]] = {ANY: set(), TIME: set(), SIZE: set(), RATIO: set()}
    for m in NUMBER.finditer(text):
        value = Decimal(m.group().replace(",", ""))
        out[ANY].add(value)
        unit = UNIT.match(text, m.end())
        if unit:
            out[dimension(unit.group(1))].add(value)
    out[RATIO] |= ratio_columns(text)
    return out


def ratio_columns(text: str) -> set[Decimal]:
    """Numbers in Markdown table columns headed as ratios ("ratio", "ViT / CNN", "of in-process")."""
    # RESULTS.md's tables give their ratios without a × sign.
    out: set[Decimal] = set()
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if not (line.startswith("|") and re.match(r"^\|[-| :]+\|$", lines[i + 1])):
            continue
        ratio = [k for k, h in enumerate(line.strip("|").split("|")) if re.search(r"ratio| / |^\s*of ", h)]
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            cells = row.strip("|").split("|")
            out |= {Decimal(n.replace(",", "")) for k in ratio if k < len(cells) for n in NUMBER.findall(cells[k])}
    return out


def assigned(path: Path, name: str) -> Decimal:
    """The number a script assigns to ``name`` at module level (for scripts that are not importable modules)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return Decimal(repr(ast.literal_eval(node.value)))
    raise LookupError(f"{path.name} assigns no {name}")


def literals(path: Path) -> set[Decimal]:
    """The numeric literals of a Python module (its configuration values)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {Decimal(repr(n.value)) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and type(n.value) in (int, float)}


def megabytes(*paths: Path) -> Decimal:
    """Total size of ``paths`` in MB (10^6 bytes), to two decimals, as `du -cb` figures are quoted."""
    return round(Decimal(sum(p.stat().st_size for p in paths)) / 10**6, 2)


def baseline_figures(name: str) -> tuple[set[Decimal], set[Decimal]]:
    """(counts, sizes in MB) of a committed baseline that the docs quote: cells, checks, models, outcomes, files."""
    path = ROOT / "reports" / f"{name}.json"
    base = json.loads(path.read_text(encoding="utf-8"))
    models = sorted((ROOT / "reports" / f"{name}-models").glob("*.pt"))
    cells = base["cells"].values()
    outcomes = [c["outcome"] for c in cells]
    counts = {Decimal(len(base["cells"])), Decimal(len(base["checks"])), Decimal(len(models))}
    counts |= {Decimal(outcomes.count(o)) for o in set(outcomes)} | {Decimal(n) for n in failed_tests(base)}
    sizes = {megabytes(path), megabytes(*models), megabytes(path, *models)} | {megabytes(m) for m in models}
    return counts, sizes


def failed_tests(base: dict) -> tuple[int, int]:
    """(tests, of them the controls') a grid of this baseline's cells fails: FAIL/ERROR/COLLAPSED on voting metrics."""
    from benchmark.methods.docs import documented_methods

    controls = {n for n, cls in documented_methods().items() if cls.capabilities.control}
    failing = [k for k, c in base["cells"].items()
               if c["outcome"] in ("FAIL", "ERROR", "COLLAPSED") and c.get("informative") is not False]
    return len(failing), sum(k.split("::")[2] in controls for k in failing)


def registry_counts() -> dict[str, int]:
    """How many methods the registry holds, by kind (the README quotes some of these)."""
    from benchmark.methods.docs import documented_methods

    methods = documented_methods()
    controls = {n for n, cls in methods.items() if cls.capabilities.control}
    attention = {n for n, cls in methods.items() if cls.capabilities.attention}
    return {"methods": len(methods), "controls": len(controls), "transformer": len(attention),
            "real": len(methods) - len(controls), "cnn": len(methods) - len(attention),
            "real_cnn": len(methods) - len(controls) - len(attention)}


def cells_and_checks_per_method() -> tuple[int, int]:
    """A method's cells on the grid (one per metric of every property) and its contract checks (split × arch)."""
    from benchmark.grading.properties import PROPERTIES
    from benchmark.models.arch import ARCHITECTURES

    return sum(len(p.metrics) for p in PROPERTIES.values()), 2 * len(ARCHITECTURES)


def config_figures() -> set[Decimal]:
    """Configuration the docs quote, computed from the code: profiles, gates, data, sweep, statistics, report."""
    import dataclasses

    from PIL import Image

    from benchmark.data.folders import MAX_PIXELS
    from benchmark.data.watermark import WatermarkSpec, footprint_fraction, mark_size
    from benchmark.data.world import BIASED, CONTROL
    from benchmark.grading.contract import CONTRACT_BATCH
    from benchmark.grading.properties import PASS_LEVEL, PROPERTIES
    from benchmark.grading.stats import ALPHA, N_BOOT
    from benchmark.methods.captum_coverage import coverage_figure
    from benchmark.methods.docs import documented_methods
    from benchmark.models.arch import ARCHITECTURES, VIT_HEADS, VIT_PATCH
    from benchmark.models.card import CONTENT_SEPARABLE, SHORTCUT_TARGETS
    from benchmark.models.train import CONFIDENT_FLIP, epochs_for
    from benchmark.profiles import PROFILES, REFERENCE_SIZE, VIT_LR, VIT_SHAPE, VIT_STEPS
    from benchmark.regression.baseline import MIN_PAIRED, tolerance
    from benchmark.reporting.redundancy import EQUAL, RANK_CORRELATION
    from benchmark.running.progress import QUIET_S
    from benchmark.running.ray_grid import MAX_ATTEMPTS
    from benchmark.running.sweep import AREAS, DEFAULT_AREAS
    from benchmark.shortcut import LEARNED_FLIP_RATE, MIN_SAMPLES

    values: list = []
    for p in PROFILES.values():
        values += [v for v in dataclasses.asdict(p).values() if type(v) in (int, float)]
        per_seed = p.per_seed(p.model_seeds)
        values += [per_seed.n_eval, per_seed.n_map_only or 0, p.model_seeds * 3]  # three arms per training seed
    values += [REFERENCE_SIZE, VIT_LR, *VIT_SHAPE, *VIT_STEPS.values(), VIT_HEADS, VIT_PATCH, REFERENCE_SIZE // VIT_PATCH]
    values += [epochs_for(PROFILES["quick"], 600), 600]  # the README's 600-photo folder and its epochs
    values += [x for _, low, high, _ in SHORTCUT_TARGETS for x in (low, high)]
    values += [CONTENT_SEPARABLE, CONFIDENT_FLIP, LEARNED_FLIP_RATE, MIN_SAMPLES, BIASED.dog, CONTROL.cat, CONTROL.dog]
    mark = WatermarkSpec()
    values += [*mark_size(mark, REFERENCE_SIZE, REFERENCE_SIZE), round(footprint_fraction(mark, REFERENCE_SIZE), 3)]
    values += [MAX_PIXELS / 10**6, *AREAS["quick"], *DEFAULT_AREAS]
    values += [PASS_LEVEL, ALPHA, N_BOOT, MIN_PAIRED, RANK_CORRELATION, EQUAL, QUIET_S, MAX_ATTEMPTS, CONTRACT_BATCH]
    values += [tolerance(m) for p in PROPERTIES.values() for m in p.metrics]
    values += [len(PROPERTIES), len(ARCHITECTURES), *cells_and_checks_per_method(), *coverage_figure(documented_methods())]
    values += registry_counts().values()
    values.append(assigned(ROOT / "benchmarks" / "quantus_vs_bench.py", "TOLERANCE"))  # its check against Quantus
    with Image.open(ROOT / "docs" / "report-first-screen.png") as image:
        values += image.size
    return {Decimal(repr(v)) if isinstance(v, float) else Decimal(v) for v in values}


@cache
def sources() -> dict[str, frozenset[Decimal]]:
    """Every value a quoted figure may come from, by dimension (ANY: every value)."""
    from benchmark.profiles import PROFILES
    from benchmark.running.progress import QUIET_S

    found: dict[str, set[Decimal]] = {ANY: set(config_figures()), TIME: set(), SIZE: set(), RATIO: set()}
    # Configured times: the per-cell limits and the heartbeat's quiet spell.
    found[TIME] |= {Decimal(repr(float(p.cell_timeout_s))) for p in PROFILES.values()} | {Decimal(repr(QUIET_S))}
    for name in ("baseline", "baseline-vit"):
        counts, sizes = baseline_figures(name)
        found[ANY] |= counts | sizes
        found[SIZE] |= sizes
    for name in SOURCE_FILES:
        for dim, values in numbers_in((ROOT / name).read_text(encoding="utf-8")).items():
            found[dim] |= values
    for name in CONFIG_MODULES:
        found[ANY] |= literals(ROOT / name)
    found[ANY] |= found[TIME] | found[SIZE] | found[RATIO]
    return {dim: frozenset(values) for dim, values in found.items()}


def cited_baseline_means(text: str) -> set[Decimal]:
    """The committed means of the baseline cells ``text`` names, as compare mode prints them (three decimals)."""
    cells = json.loads((ROOT / "reports" / "baseline.json").read_text(encoding="utf-8"))["cells"]
    return {Decimal(f"{cells[key]['mean']:.3f}") for key in re.findall(r"\b\w+::\w+::\w+\b", text)
            if key in cells and cells[key].get("mean") is not None}


def unsourced(text: str, known: dict[str, frozenset[Decimal]]) -> list[str]:
    """The figures in ``text`` that no source holds."""
    # A time, size or ratio must be one a source gives as such, so a stale "9 minutes" cannot match any 9. A
    # percentage may also be a source's share (94.8 % ~ 0.948).
    extra = cited_baseline_means(text) | set(NOT_FIGURES)
    out = []
    for raw, value, unit in figures(text):
        pool = known.get(dimension(unit), frozenset()) | (extra if dimension(unit) == ANY else set())
        if value not in pool and not (unit == "%" and value / 100 in pool):
            out.append(raw)
    return out


@pytest.mark.parametrize("path", [README, *[d for d in DOCS if d != GENERATED], *SIDE_READMES],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_quoted_figure_comes_from_a_source(path):
    stale = unsourced(path.read_text(encoding="utf-8"), sources())
    assert stale == [], f"{path.name} quotes figures that no source holds (RESULTS.md, a baseline, the code): {stale}"


def test_the_figure_check_fails_on_a_made_up_figure():
    text = "The grid took 987.6 s on 2 cores, 12 % faster, for 4 methods across 1,234 cells in 2025."
    assert [raw for raw, _, _ in figures(text)] == ["987.6 s", "12 %", "1,234"]
    known = {ANY: frozenset({Decimal("1234"), Decimal("0.12"), Decimal("987.6")}), TIME: frozenset()}
    assert unsourced(text, known) == ["987.6 s"]  # a time must be a measured time, not any number
    assert unsourced("Ray took 561.1 s and `-n 2` 722.1 s.", sources()) == []
    assert unsourced("Ray took 561.2 s, or about 9 minutes.", sources()) == ["561.2 s", "9 minutes"]


def test_identifiers_versions_and_option_values_are_not_figures():
    text = ("ResNet-20 on x86_64 with sha256, seed1 and bf16; torch 2.14.1 at 10.0.0.1:6379, issue 31, ch. 12, "
            "on 2026-12-03 at 04:10 UTC; `--bench-mark 0.06`, `-n 2`, `--bench-sweep-levels 0.01,0.04@0.5`; 3/4.")
    assert figures(text) == []


# --- Claims a newcomer relies on ----------------------------------------------------------------------------------------

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def prose(path: Path) -> str:
    """The text of ``path`` with its line breaks and blockquote marks folded into single spaces."""
    return " ".join(path.read_text(encoding="utf-8").replace("\n> ", "\n").split())


def committed_baseline() -> dict:
    return json.loads((ROOT / "reports" / "baseline.json").read_text(encoding="utf-8"))


def test_the_readme_quotes_the_registry_and_the_properties():
    from benchmark.grading.properties import PROPERTIES

    text = prose(README)
    cells, _ = cells_and_checks_per_method()
    assert f"Every registered method, {registry_counts()['methods']} of them" in text
    assert f"runs through {cells} [Quantus]" in text
    assert f"metrics of {NUMBER_WORDS[len(PROPERTIES)]} properties" in text


def test_the_compare_example_counts_a_new_methods_cells_and_checks():
    from benchmark.grading.properties import PROPERTIES
    from benchmark.methods.docs import documented_methods

    text = prose(README)
    cells, checks = cells_and_checks_per_method()
    assert f"NEW method MyLRP: {cells} cell(s)" in text
    assert (f"A new method brings {cells} cells (one per metric of the {NUMBER_WORDS[len(PROPERTIES)]} properties) "
            f"and {checks} contract checks") in text
    # The committed baseline holds every graded method's cells and checks in these numbers ...
    base = committed_baseline()
    graded = {k.split("::")[2] for k in base["cells"]}
    assert {sum(k.endswith(f"::{m}") for k in base["cells"]) for m in graded} == {cells}
    assert len(base["checks"]) == checks * len(graded)
    # ... so a registered method it lacks shows as new beside MyLRP, which the README must say while it is so.
    missing = sorted(set(documented_methods()) - graded)
    for name in missing:
        assert f"{name}, registered after it, is listed as new too" in text
    if not missing:
        assert "registered after it" not in text, "the README says a method is missing from the baseline; none is"


def test_the_regressed_example_quotes_the_committed_baseline():
    from benchmark.grading.properties import PROPERTIES
    from benchmark.profiles import PROFILES
    from benchmark.regression.baseline import tolerance

    line = next(ln for ln in prose(ROOT / "docs" / "compare.md").split("```") if "REGRESSED " in ln)
    key, before, tol, n = re.search(r"REGRESSED (\S+): (\w+ [0-9.]+) →.*tolerance ([0-9.]+), n=(\d+) images", line).groups()
    cell = committed_baseline()["cells"][key]
    assert before == f"{cell['outcome']} {cell['mean']:.3f}"
    suite, metric, _ = key.split("::")
    spec = next(m for m in PROPERTIES[suite].metrics if m.name == metric)
    assert Decimal(tol) == Decimal(repr(tolerance(spec))) and int(n) == len(cell["scores"]) == PROFILES["quick"].n_map_only


def test_the_readme_states_the_failed_tests_of_the_committed_grid():
    failing, of_controls = failed_tests(committed_baseline())
    text = prose(README)
    assert f"fails {failing} tests, {of_controls} of them the control methods' own" in text
    assert "A healthy `pytest suites/` exits with status 1" in text
