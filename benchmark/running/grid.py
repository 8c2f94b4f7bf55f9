"""The grid without pytest: every (property, metric, method) cell graded by grade_cell, and the same reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tabulate import tabulate

from benchmark.errors import ConfigError
from benchmark.grading.grader import grade_cell
from benchmark.grading.properties import PROPERTIES
from benchmark.grading.verdict import ERROR, FAIL, Cell
from benchmark.reporting.figures import saliency_grid
from benchmark.reporting.html import write_html, write_sibling_reports
from benchmark.reporting.ranking import overall_rows, summarise
from benchmark.reporting.report import build_record, write_reports
from benchmark.running import configure, worlds
from benchmark.running.collector import run_info
from benchmark.running.jobs import GRID
from benchmark.running.run_context import RunContext


def grade_grid(ctx: RunContext, methods: list[str], *, properties: list[str] | None = None,
               say: Callable[[str], None] = lambda line: None) -> list[Cell]:
    """Every cell of ``methods`` × the properties' metrics, graded in this process (suites' order: property first)."""
    store = worlds.run_store(ctx, GRID)
    cells = []
    for key in properties or list(PROPERTIES):
        prop = PROPERTIES[key].with_thresholds(ctx.thresholds.get(key, {}))
        for method in methods:
            for metric in prop.metrics:
                # The grader is made only when a cell is not stored: a warm re-run computes no map.
                compute = lambda prop=prop, metric=metric, method=method: grade_cell(  # noqa: E731
                    worlds.grader_of(ctx), prop, metric, method)
                cells.append(compute() if store is None else store.cell(prop, metric, method, compute))
            say(f"{prop.name}: {method} graded ({len(cells)} cells)")
    return cells


def write_grid_reports(ctx: RunContext, cells: list[Cell], out: Path, *, root: Path, started: float) -> list[Path]:
    """The grid's reports from its cells: leaderboards, run.json, the flipped-examples figure and index.html."""
    record = build_record(cells, run_info(ctx, root=root, started=started, executor="cli"))
    written = write_reports(record, out)
    methods = sorted({c.method for c in cells})
    grader = worlds.grader_of(ctx)
    written.append(saliency_grid(grader, methods, out / "flipped_examples.png", worlds.FIGURE_EXAMPLES,
                                 worlds.figure_maps(ctx, grader)))
    written.append(write_html(record, out))
    try:
        written += write_sibling_reports(record, out)
    except Exception as exc:  # the other architecture's reports are a courtesy; this run's are written
        print(f"the other architecture's reports beside {out} were not refreshed: {type(exc).__name__}: {exc}")
    return written


def run_grid(ctx: RunContext, methods: list[str], out: Path, *, root: Path, properties: list[str] | None = None,
             progress: bool = True, say: Callable[[str], None] = print) -> tuple[list[Cell], list[Path]]:
    """Build (or load) the run's world, grade every cell and write the reports; (cells, written paths)."""
    started = time.time()
    worlds.get_bench(ctx, progress=progress)
    cells = grade_grid(ctx, methods, properties=properties, say=say)
    return cells, write_grid_reports(ctx, cells, out, root=root, started=started)

def command(args) -> int:
    """Run ``grade``: configure as pytest would, grade, write the reports; 1 when a real method's cell failed."""
    root = Path.cwd()

    def get(option: str):
        return getattr(args, option.removeprefix("--bench-").replace("-", "_"))

    try:
        ctx = configure.context_from(get, root)
        methods = configure.choose_methods(args.methods)
    except ConfigError as exc:
        # The validators name pytest's options; this command's are the same without "bench-".
        raise ConfigError(str(exc).replace("--bench-", "--")) from None
    properties = None
    if args.properties:
        properties = [k.strip() for k in args.properties.split(",") if k.strip()]
        unknown = [k for k in properties if k not in PROPERTIES]
        if unknown:
            raise ConfigError(f"--properties: unknown {unknown}; choose from {sorted(PROPERTIES)}")
    print(f"profile {ctx.profile.name} ({ctx.profile_reason})")
    cells, written = run_grid(ctx, methods, configure.reports_dir(get, root), root=root, properties=properties)
    summary = summarise(cells)
    print(tabulate(overall_rows(summary), headers=["rank", "method", "effect", "passed", *summary["suites"]]))
    print(ctx.results.summary_line())
    print(f"reports: {', '.join(str(p) for p in written)}")
    failed = [c for c in cells if c.outcome in (FAIL, ERROR)]
    return 1 if failed else 0
