"""The controller's collector: cells arrive on report.user_properties (also from xdist workers) and become reports."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from tabulate import tabulate

from benchmark.cache import stable_hash
from benchmark.errors import BenchmarkError
from benchmark.grading.grader import Grader, graded_indices
from benchmark.grading.verdict import INCONCLUSIVE, NA, USER_PROPERTY, Cell
from benchmark.models import fused
from benchmark.options import channels_last_on, describe, fused_inference_on
from benchmark.regression.machine import describe_machine
from benchmark.reporting.figures import saliency_grid
from benchmark.reporting.html import write_html, write_sibling_reports
from benchmark.reporting.ranking import is_control, overall_rows, summarise
from benchmark.reporting.report import build_record, git_hash, package_versions, write_reports
from benchmark.reporting.sweep_report import limit_text, write_sweep
from benchmark.running import ray_grid, worlds
from benchmark.running.configure import reports_dir, suites_requested
from benchmark.running.jobs import split_stored, store_done, with_work
from benchmark.running.merge import load_record
from benchmark.running.progress import Heartbeat
from benchmark.running.run_context import RunContext, context
from benchmark.running.scheduling import method_costs, order_by_cost
from benchmark.running.sweep import SWEEP_PROPERTY, merge_outcomes, outcome_from_json, sweep_record


def run_info(ctx: RunContext, *, root: Path, started: float, workers: int = 0, executor: str = "in-process",
             shard: str | None = None, fallbacks: Iterable[str] | None = None) -> dict:
    """The run record's "run" section: profile, options, versions, machine, inference path, models, samples and cache
    keys; ``fallbacks`` are the run's fused-inference fallbacks as its processes warned them (None: this process's)."""
    profile, options = ctx.profile, ctx.options
    info = {
        "profile": dataclasses.asdict(profile),
        "profile_reason": ctx.profile_reason,
        "seed": options.seed,
        "options": describe(options),
        "git": git_hash(root),
        "versions": package_versions(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "machine": describe_machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        "workers": workers,
        "executor": executor,
    }
    if shard:
        info["shard"] = shard
    if ctx.bench is not None:
        info.update(_bench_info(ctx))
        info["inference"] = _inference(ctx, fallbacks)
    return info


def _inference(ctx: RunContext, fallbacks: Iterable[str] | None) -> dict:
    """How the run's models ran: channels-last copies, fused no-grad passes, and every model that fell back to plain
    inference (why, from its warning)."""
    device = ctx.bench.device.type
    return {"channels_last": channels_last_on(ctx.options.channels_last, device),
            "fused_inference": fused_inference_on(ctx.options.fused_inference, device),
            "fused_fallbacks": sorted(set(fused.fallbacks() if fallbacks is None else fallbacks))}


def session_run_info(config: pytest.Config, started: float, fallbacks: Iterable[str] = ()) -> dict:
    """:func:`run_info` of a pytest session (its fallbacks: the warnings pytest recorded, from xdist workers too)."""
    return run_info(context(config), root=config.rootpath, started=started,
                    workers=int(getattr(config.option, "numprocesses", 0) or 0),
                    executor=config.getoption("--bench-executor"), shard=config.getoption("--bench-shard"),
                    fallbacks=fallbacks)


def _bench_info(ctx: RunContext) -> dict:
    bench, profile = ctx.bench, ctx.profile
    seeds = bench.seeds()
    return {
        "models": {name: m.card for name, m in bench.arm_models().items()},
        "model_seeds": [r.seed for r in seeds],
        "data": bench.world.manifest,
        # Every model graded, with the file and sha256 of its exact weights: what a baseline pins.
        "weights": {name: {"file": str(m.weights_path), "sha256": m.card["weights_sha256"], **m.arch_spec,
                           "card": m.card, "pinned_by": m.pinned_by}
                    for name, m in bench.all_models().items()},
        # Test-set positions of the graded images, in the order of every cell's per-sample scores (per training
        # seed when there are several: each seed's biased model flips its own cats).
        "samples": ([int(i) for i in graded_indices(bench)] if len(seeds) == 1 else
                    {str(r.seed): [int(i) for i in graded_indices(bench.for_seed(r))] for r in seeds}),
        # The cache keys that name the exact artefacts graded: same keys + seed + versions = same run.
        "config_hashes": {"profile": stable_hash(profile), "data": bench.world.key,
                          "biased_model": bench.biased.card["key"], "control_model": bench.control.card["key"],
                          "absent_model": bench.absent.card["key"],
                          "biased_weights_sha256": bench.biased.card.get("weights_sha256"),
                          "control_weights_sha256": bench.control.card.get("weights_sha256")},
    }


def inconclusive_line(summary: dict) -> str:
    """How many property verdicts this run could not decide, and what decides them ("" when none)."""
    undecided = [(s, m) for s, by in summary["verdicts"].items() for m, v in by.items() if v == INCONCLUSIVE]
    if not undecided:
        return ""
    return (f"{len(undecided)} property verdict(s) INCONCLUSIVE: a CI straddles the pass level or a control neither "
            "is beaten nor wins, so this run cannot tell (their tests show as inconclusive, not failed); more images "
            "(--bench-profile standard or paper) or training seeds (--bench-model-seeds) can decide them. Each cell's "
            "message (leaderboard.md, index.html) names the undecided part.")


class CellCollector:
    """Controller-side: gathers every test's cell and sweep outcome, then writes the reports at session end."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.cells: dict[str, Cell] = {}
        self.sweep: dict[str, object] = {}  # test id -> one method's LevelOutcome at one level
        self.sweep_result: dict | None = None
        self.written_note = ""
        self.started = time.time()
        self.written: list[Path] = []
        self.heartbeat: Heartbeat | None = None  # while the tests run on a terminal
        self.fallbacks: set[str] = set()  # fused-inference fallbacks, from any process's warnings

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not suites_requested(self.config) or self.config.option.collectonly:
            return
        ctx = context(self.config)
        if ctx.executor:
            reporter = self.config.pluginmanager.getplugin("terminalreporter")
            say = reporter.write_line if reporter else (lambda line: None)
            items = list(session.items)  # Ray takes the work in xdist's order: the costliest group first
            order_by_cost(items, method_costs(reports_dir(self.config.getoption, self.config.rootpath)))
            jobs = ray_grid.grid_jobs(ctx, items)
            store = lambda world: worlds.run_store(ctx, world)  # noqa: E731
            stored, jobs = split_stored(jobs, store)  # Ray computes only what the result store cannot answer
            jobs = with_work(jobs)  # a warm store must not start Ray for figure maps alone
            try:
                done = ray_grid.run_on_ray(ctx, jobs, say) if jobs else {}
            except BenchmarkError as exc:
                raise pytest.UsageError(str(exc)) from None
            store_done(jobs, done, store)
            ctx.precomputed = {**stored, **done}
        # pytest's progress ticks once per finished test; a slow cell (KernelShap's first maps) is otherwise silent.
        if session.items:
            self.heartbeat = Heartbeat.on_terminal(len(session.items))
            if self.heartbeat is not None:
                self.heartbeat.start()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        context(self.config).compare.outcomes.observe(report)
        if report.when == "teardown" and self.heartbeat is not None:
            self.heartbeat.tick()
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == USER_PROPERTY:
                self.cells[report.nodeid] = Cell.from_json(value)
            elif key == SWEEP_PROPERTY:
                self.sweep[report.nodeid] = outcome_from_json(value)

    def pytest_warning_recorded(self, warning_message, when: str, nodeid: str, location) -> None:
        text = str(warning_message.message)
        if text.startswith(fused.FALLBACK_TEXT):  # a model ran plain: the run record says which and why
            self.fallbacks.add(text)

    # First: xdist's own sessionfinish waits for its workers' processes to exit (seconds, after a grid); the reports
    # need only what the workers sent before their loop ended, so they are written while the workers exit.
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        compare = context(self.config).compare
        out = reports_dir(self.config.getoption, self.config.rootpath)
        if not self._keep(int(exitstatus), compare.checks):
            return
        if self.sweep:
            self._write_sweep(out)
        if not self.cells and not compare.checks:
            return
        info = session_run_info(self.config, self.started, self.fallbacks)
        record = build_record(list(self.cells.values()), info, checks=compare.checks)
        if self.cells:
            self._write_grid(record, out)
        compare.finish(session, exitstatus, list(self.cells.values()), record["run"], out)
        self.written += compare.written

    def _keep(self, exitstatus: int, checks: dict) -> bool:
        """Whether the collected results can be reported; otherwise says why in the note and drops them."""
        if exitstatus == pytest.ExitCode.INTERRUPTED and (self.sweep or self.cells or checks):
            # Verdicts, ranks, detection limits and comparisons of the cells that happened to finish would be wrong,
            # not partial: nothing is written, and the previous reports stay as they were.
            what = "the sweep's sweep.json/md/png" if self.sweep else "reports"
            self.written_note = f"shortcut-bench: the run was interrupted: {what} not written (run it again)"
            self.sweep, self.cells = {}, {}
            return False
        graded = [c for c in self.cells.values() if c.outcome != NA]
        if self.cells and not graded:
            # Nothing to rank: every selected method is n/a for every selected property.
            methods = sorted({c.method for c in self.cells.values()})
            self.written_note = (f"shortcut-bench: no cell was graded: {', '.join(methods)} "
                                 f"{'is' if len(methods) == 1 else 'are'} n/a for every selected property "
                                 f"({next(iter(self.cells.values())).message}); no report written")
            self.cells = {}
            return False
        if graded and all(is_control(c.method) for c in graded):
            self.written_note = ("shortcut-bench: only controls were graded ("
                                 f"{', '.join(sorted({c.method for c in graded}))}): the reports rank no real method")
        return True

    def _write_sweep(self, out: Path) -> None:
        self.sweep_result = sweep_record(merge_outcomes(list(self.sweep.values())),
                                         session_run_info(self.config, self.started, self.fallbacks))
        self.written += write_sweep(self.sweep_result, out)
        if not self.cells and (out / "run.json").is_file():
            # A grid report already here gains the curves and the detection-limit column.
            try:
                record = load_record(out / "run.json")
                self.written += [*write_reports(record, out), write_html(record, out)]
            except BenchmarkError as exc:
                self.written_note = f"the grid's reports were not updated with the sweep: {exc}"

    def _write_grid(self, record: dict, out: Path) -> None:
        ctx = context(self.config)
        self.written += write_reports(record, out)
        if ctx.bench is not None:
            methods = sorted({c.method for c in self.cells.values()})
            try:
                grader = ctx.grader or Grader(ctx.bench)
                self.written.append(saliency_grid(grader, methods, out / "flipped_examples.png",
                                                  worlds.FIGURE_EXAMPLES, worlds.figure_maps(ctx, grader)))
            except Exception as exc:  # the figure illustrates the reports; its failure must not lose them
                self.written_note = f"shortcut-bench: flipped_examples.png not written: {type(exc).__name__}: {exc}"
        self.written.append(write_html(record, out))
        try:
            self.written += write_sibling_reports(record, out)
        except Exception as exc:  # the other architecture's reports are a courtesy; this run's are written
            self.written_note = (f"shortcut-bench: the other architecture's reports beside {out} were not refreshed: "
                                 f"{type(exc).__name__}: {exc}")

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        if self.cells:
            summary = summarise(list(self.cells.values()))
            tr.write_sep("=", "shortcut-bench: method × property")
            tr.write_line(tabulate(overall_rows(summary), headers=["rank", "method", "effect", "passed", *summary["suites"]]))
            line = inconclusive_line(summary)
            if line:
                tr.write_line(line, yellow=True)
        if self.sweep:
            limits = self.sweep_result["detection_limits"]
            excluded = [lv["label"] for lv in self.sweep_result["levels"] if not lv["learned"]]
            tr.write_sep("=", "shortcut-bench: strength sweep (localisation detection limits)")
            for m in sorted(limits, key=lambda m: (limits[m] is None, m)):
                tr.write_line(f"{m}: {limit_text(limits, m, self.sweep_result.get('detection_limit_ranges'))}")
            if excluded:
                tr.write_line(f"excluded levels (the biased model did not learn the shortcut): {', '.join(excluded)}")
        results = context(self.config).results
        if results is not None and (results.hits or results.misses):
            tr.write_line(results.summary_line())  # this process's lookups (xdist workers keep their own counts)
        context(self.config).compare.terminal_summary(tr)
        if self.written_note:
            tr.write_line(self.written_note)
        if self.written:
            tr.write_line(f"reports: {', '.join(str(p) for p in self.written)}")
