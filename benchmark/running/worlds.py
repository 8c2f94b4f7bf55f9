"""The run's worlds and models (the grid's, each sweep level's), built once per process from its RunContext."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from benchmark.errors import BenchmarkError, ShortcutNotLearned
from benchmark.grading.grader import Grader
from benchmark.options import MarkLevel
from benchmark.running.jobs import GRID, FigureJob
from benchmark.running.run_context import RunContext
from benchmark.running.store import FIGURE_EXAMPLES, RunStore, open_run_store
from benchmark.running.sweep import LevelOutcome, prepare_level
from benchmark.session import Bench, prepare


def get_bench(ctx: RunContext, *, progress: bool = False) -> Bench:
    """The grid's data and models (file locks make processes share the cache); raises BenchmarkError saying why not."""
    if ctx.bench is None:
        try:
            compare = ctx.compare  # None outside pytest: the CLI grades what it trains
            ctx.bench = prepare(ctx.profile, ctx.options, progress=progress,
                                pinned=compare.pinned if compare else None,
                                train_unpinned=compare.train_unpinned if compare else False)
        except ShortcutNotLearned as exc:
            raise BenchmarkError(f"shortcut-bench stopped before grading: {exc}") from None
        except BenchmarkError as exc:
            raise BenchmarkError(f"shortcut-bench could not prepare its data/models: {exc}") from None
    return ctx.bench


def get_level(ctx: RunContext, level: MarkLevel, *, progress: bool = False) -> tuple[LevelOutcome, Grader | None]:
    """(outcome, Grader or None) of one sweep level, built once per process; raises BenchmarkError saying why not."""
    if level.label not in ctx.sweep:
        try:
            ctx.sweep[level.label] = prepare_level(ctx.profile, ctx.options, level, progress=progress)
        except BenchmarkError as exc:
            raise BenchmarkError(f"shortcut-bench could not prepare sweep level {level.label}: {exc}") from None
        _, grader = ctx.sweep[level.label]
        if grader is not None:
            grader.share_controls(StoredControls(ctx, level.label))
    return ctx.sweep[level.label]


def grader_of(ctx: RunContext) -> Grader:
    """This process's Grader of the grid's models, kept in the run context (the session-end figure reuses its maps)."""
    if ctx.grader is None:
        ctx.grader = Grader(get_bench(ctx))
        ctx.grader.share_controls(StoredControls(ctx, GRID))
    return ctx.grader


def keep_figure_maps(ctx: RunContext) -> None:
    """Store the figure's maps of every method this process graded, so that the controller of an xdist run, and
    later runs, draw them instead of explaining them again."""
    if ctx.grader is None or ctx.results is None:
        return
    store = run_store(ctx, GRID)
    for method, maps in ctx.grader.store.graded_maps().items():
        store.put_maps(method, maps[:FIGURE_EXAMPLES])


def figure_maps(ctx: RunContext, grader: Grader) -> Callable[[str, int], np.ndarray]:
    """method, n -> the figure's maps: graded in this process, else by a Ray worker, else stored, else explained here."""
    store = run_store(ctx, GRID)

    def maps(method: str, n: int) -> np.ndarray:
        if method not in grader.store.graded_maps():
            found = ctx.precomputed.get(FigureJob(method).key)  # a Ray worker's
            if found is None and store is not None:
                found = store.stored_maps(method)
            if found is not None and len(found) >= n:
                return found[:n]
        return grader.store.figure_maps(method, n)

    return maps


class StoredControls:
    """Controls' scores through one world's view of the result store, opened when a control is first scored (a
    process that grades nothing, such as an xdist controller preparing the sweep's levels, never opens it)."""

    def __init__(self, ctx: RunContext, world: str):
        self.ctx = ctx
        self.world = world

    def control_scores(self, prop, metric, method: str, model_key: str, model: str, compute):
        """The stored scores, else ``compute()``'s (stored); computed here alone when the run has no store."""
        store = run_store(self.ctx, self.world)
        return compute() if store is None else store.control_scores(prop, metric, method, model_key, model, compute)


def run_store(ctx: RunContext, world: str) -> RunStore | None:
    """The result store's view for one world (GRID, or a graded sweep level's label); None without a store."""
    if ctx.results is None:
        return None
    if world not in ctx.run_stores:
        if world == GRID:
            bench = get_bench(ctx)
        else:
            _, grader = ctx.sweep[world]
            if grader is None:
                return None
            bench = grader.bench
        ctx.run_stores[world] = open_run_store(ctx.results, bench)
    return ctx.run_stores[world]
