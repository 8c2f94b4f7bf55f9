"""pytest side of regression checks: --bench-compare grades the baseline's pinned models, marks baseline failures
xfail, reports what changed and sets the exit status; --bench-update-baseline rewrites the baseline deliberately."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from benchmark.cache import CODE_VERSION
from benchmark.errors import BenchmarkError
from benchmark.grading.verdict import standard as pass_standard
from benchmark.methods import all_methods, discover
from benchmark.options import describe, model_seeds
from benchmark.pinning import load_pinned
from benchmark.regression import baseline as bl
from benchmark.regression.machine import machine_differences
from benchmark.running.run_context import RunContext
from benchmark.session import contract_names

# user_properties entries tagging each item (they travel to the xdist controller on every report).
CELL_KEY, CHECK_KEY = "shortcut_bench_cell_key", "shortcut_bench_check"
# A baseline that cannot be used is bad input: exit status 2 with the reason, before anything is built or written.
BAD_BASELINE_EXIT = 2


def add_options(group) -> None:
    """The compare-mode options, added to the plugin's option group."""
    group.addoption("--bench-compare", default=None, metavar="BASELINE",
                    help="compare with a baseline (e.g. reports/baseline.json): baseline failures are expected "
                         "failures; exit non-zero only when a cell or check regressed")
    group.addoption("--bench-update-baseline", nargs="?", const="", default=None, metavar="BASELINE",
                    help="rewrite the baseline from this run, recording what changed (default path: the "
                         "--bench-compare file, else reports/baseline.json)")


def run_identity(ctx: RunContext) -> dict:
    """The (profile, seed, data, training seeds) a baseline must match, known before anything is built."""
    # The run record's own fields, so that this and a finished run's identity are one function (baseline.identity).
    return bl.identity({"profile": dataclasses.asdict(ctx.profile), "seed": ctx.options.seed,
                        "options": describe(ctx.options), "model_seeds": model_seeds(ctx.profile, ctx.options),
                        "data": {"code_version": CODE_VERSION}})


class CompareMode:
    """State of one session in compare and/or update mode (every process loads the baseline and its models)."""

    def __init__(self, config: pytest.Config, ctx: RunContext):
        self.config = config
        self.ctx = ctx
        compare = config.getoption("--bench-compare")
        update = config.getoption("--bench-update-baseline")
        self.compare_path = Path(compare) if compare else None
        if update is None:
            self.update_path = None
        else:
            self.update_path = Path(update) if update else self.compare_path or config.rootpath / bl.DEFAULT_PATH
        ident = run_identity(ctx)
        self.notes: list[str] = []
        self.baseline = None
        self.pinned = None  # benchmark.pinning.PinnedModels the run grades instead of training
        self.train_unpinned = False  # an update trains the models the old baseline does not pin yet
        if self.compare_path is not None:
            self.baseline = bl.load_baseline(self.compare_path)
            bl.check_identity(self.baseline, ident, self.compare_path)
            self.pinned = load_pinned(self.baseline, self.compare_path, self._archs())
        self.old = None  # the baseline an update replaces
        if self.update_path is not None:
            self.old, note = bl.previous_for_update(self.update_path, ident)
            self.notes += [note] if note else []
            if self.pinned is None and self.old is not None and self.old.get("models"):
                # Updating keeps grading the models the baseline already pins (remove it to pin new ones).
                self.pinned = load_pinned(self.old, self.update_path, self._archs(), require=False)
                self.train_unpinned = True
        self.key_of: dict[str, str] = {}  # nodeid -> cell key or check nodeid
        self.checks: dict[str, str] = {}  # check nodeid -> passed | failed | error | skipped
        self.failed: set[str] = set()
        self.changes: list[bl.Change] = []
        self.machine: dict = {}  # the run record's machine, compared with the baseline's in the summary
        self.written: list[Path] = []

    def _archs(self) -> dict[str, str]:
        profile = self.ctx.profile
        return {"biased": profile.arch, "control": profile.arch, "absent": profile.arch,
                **{name: arch for name, arch, _, _ in contract_names(profile)}}

    # --- every process ------------------------------------------------------------------------------

    def mark_items(self, items: list[pytest.Item]) -> None:
        """Tag each item with its key; mark what the baseline recorded as failing xfail(strict)."""
        overrides = self.ctx.thresholds
        for item in items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            prop = getattr(item.cls, "prop", None) if getattr(item, "cls", None) else None
            if prop is not None and "bench_metric" in params and "bench_method" in params:
                metric = prop.with_thresholds(overrides.get(prop.key, {})).metric(params["bench_metric"])
                key = bl.cell_key(prop.key, metric.name, params["bench_method"])
                version, standard = prop.version, pass_standard(prop, metric)
                item.user_properties.append((CELL_KEY, key))
            else:
                key, version, standard = item.nodeid, None, None
                item.user_properties.append((CHECK_KEY, key))
            if self.baseline is not None:
                reason = bl.expected_failure(self.baseline, key, version, standard)
                if reason:
                    item.add_marker(pytest.mark.xfail(strict=True, reason=reason))

    # --- controller -----------------------------------------------------------------------------------

    def observe(self, report: pytest.TestReport) -> None:
        """Note the report's key, failures, and (for checks: tests without cells) the raw outcome."""
        tags = dict((k, v) for k, v in report.user_properties if k in (CELL_KEY, CHECK_KEY))
        key = tags.get(CELL_KEY) or tags.get(CHECK_KEY)
        if key is None:
            return
        self.key_of[report.nodeid] = key
        if report.failed:
            self.failed.add(report.nodeid)
        if CHECK_KEY not in tags:
            return
        outcome = _raw_outcome(report)
        if outcome is not None:
            # A later phase only overrides an earlier one when it is worse (a failing teardown).
            prev = self.checks.get(key)
            if prev is None or report.when == "call" or outcome == "error":
                self.checks[key] = outcome

    def finish(self, session: pytest.Session, exitstatus: int, cells: list, run: dict, out_dir: Path) -> None:
        """Compare, write compare.md/.json, set the exit status; update the baseline when asked."""
        discover()
        registered = set(all_methods())
        cell_keys = {bl.cell_key(c.suite, c.metric, c.method) for c in cells}
        # A failed test with no graded cell (a crashed fixture, an interrupted run) is harness breakage.
        unexplained = sorted(n for n in self.failed if self.key_of.get(n) not in cell_keys | set(self.checks))
        clean_run = int(exitstatus) in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
        if self.baseline is not None:
            self.machine = run.get("machine") or {}
            self.changes = bl.compare(self.baseline, cells, self.checks, registered=registered,
                                      samples=run.get("samples"), profile=self.ctx.profile)
            self.written += bl.write_comparison(self.changes, out_dir, str(self.compare_path), self.baseline, run)
            if clean_run:
                failing = bl.fails(self.changes)
                session.exitstatus = pytest.ExitCode.TESTS_FAILED if failing or unexplained else pytest.ExitCode.OK
            if unexplained:
                self.notes.append(f"{len(unexplained)} test(s) failed without a graded cell (harness breakage), "
                                  f"e.g. {unexplained[0]}")
        if self.update_path is not None:
            if not clean_run or unexplained:
                self.notes.append(f"baseline NOT updated ({self.update_path}): the run was interrupted or had "
                                  "failures without a graded cell; fix them and run again")
                return
            try:
                new = bl.record_baseline(self.update_path, self.old, run, cells, self.checks, registered=registered)
            except BenchmarkError as exc:
                self.notes.append(f"baseline NOT updated ({self.update_path}): {exc}")
                return
            self.written.append(self.update_path)
            last = new["history"][-1]
            self.notes.append(f"baseline updated: {self.update_path} ({', '.join(f'{v} {k}' for k, v in last['counts'].items())})")

    def terminal_summary(self, tr) -> None:
        """The regression report: regressions and improvements by name, new and not-comparable cells grouped."""
        if self.baseline is not None:
            tr.write_sep("=", f"shortcut-bench compare with {self.compare_path}")
            tr.write_line(f"graded on the {len(self.pinned.models)} models the baseline pins (no training); "
                          f"paired by image against its per-sample scores")
            for diff in machine_differences(self.baseline.get("machine"), self.machine):
                tr.write_line(f"info: other machine than the baseline's: {diff}")
            for line, status in bl.report_lines(self.changes):
                tr.write_line(line, red=status in bl.FAILING, green=status == bl.IMPROVED)
            verdict = "REGRESSED: exit status 1" if bl.fails(self.changes) else \
                "no regressions: the failures above are expected, new or improvements (exit status 0 unless other tests broke)"
            tr.write_line(f"compare: {bl.summary_line(self.changes)}; {verdict}")
            if any(c.status == bl.IMPROVED for c in self.changes):
                tr.write_line("improvements show as XPASS(strict); record them with --bench-update-baseline")
        for note in self.notes:
            tr.write_line(note)


def _raw_outcome(report: pytest.TestReport) -> str | None:
    """A check's outcome as if no xfail mark applied: passed | failed | error | skipped."""
    if report.when != "call":
        if report.failed:
            return "error"
        return "skipped" if report.skipped and report.when == "setup" else None
    if hasattr(report, "wasxfail"):
        return "failed" if report.skipped else "passed"
    if report.failed and str(report.longrepr).startswith("[XPASS(strict)]"):
        return "passed"
    return report.outcome


def configure(config: pytest.Config, ctx: RunContext) -> None:
    """Track checks (for the run record) and load the baselines named on the command line and their pinned
    models; an unusable baseline ends the session with exit status 2 and the reason, before anything is built."""
    try:
        ctx.compare = CompareMode(config, ctx)
    except BenchmarkError as exc:
        pytest.exit(f"shortcut-bench: {exc}", returncode=BAD_BASELINE_EXIT)
