"""pytest side of regression checks: --bench-compare grades the baseline's pinned models, marks baseline failures
xfail, reports what changed and sets the exit status; --bench-update-baseline rewrites the baseline deliberately."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from benchmark.cache import CODE_VERSION
from benchmark.errors import BenchmarkError
from benchmark.grading.verdict import standard as pass_standard
from benchmark.methods import all_methods, discover
from benchmark.options import describe, model_seeds
from benchmark.pinning import PinnedModels, load_pinned
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


@dataclass
class Baselines:
    """The baseline files a session reads: the one compared with, the one an update replaces, and their pinned models."""

    compare_path: Path | None = None
    update_path: Path | None = None
    baseline: dict | None = None  # the compared baseline
    old: dict | None = None  # the baseline an update replaces
    pinned: PinnedModels | None = None  # the models the run grades instead of training
    train_unpinned: bool = False  # an update trains the models the old baseline does not pin yet
    notes: list[str] = field(default_factory=list)


def load_baselines(config: pytest.Config, ctx: RunContext) -> Baselines:
    """Read --bench-compare / --bench-update-baseline, check their identity and load their pinned models."""
    compare = config.getoption("--bench-compare")
    update = config.getoption("--bench-update-baseline")
    b = Baselines(compare_path=Path(compare) if compare else None)
    if update is not None:
        b.update_path = Path(update) if update else b.compare_path or config.rootpath / bl.DEFAULT_PATH
    ident = run_identity(ctx)
    archs = _archs(ctx)
    if b.compare_path is not None:
        b.baseline = bl.load_baseline(b.compare_path)
        bl.check_identity(b.baseline, ident, b.compare_path)
        b.pinned = load_pinned(b.baseline, b.compare_path, archs)
    if b.update_path is not None:
        b.old, note = bl.previous_for_update(b.update_path, ident)
        b.notes += [note] if note else []
        if b.pinned is None and b.old is not None and b.old.get("models"):
            # Updating keeps grading the models the baseline already pins (remove it to pin new ones).
            b.pinned = load_pinned(b.old, b.update_path, archs, require=False)
            b.train_unpinned = True
    return b


def _archs(ctx: RunContext) -> dict[str, str]:
    profile = ctx.profile
    return {"biased": profile.arch, "control": profile.arch, "absent": profile.arch,
            **{name: arch for name, arch, _, _ in contract_names(profile)}}


@dataclass
class Outcomes:
    """Controller-side: each report's cell key or check id, the failed tests, and the checks' raw outcomes."""

    key_of: dict[str, str] = field(default_factory=dict)  # nodeid -> cell key or check nodeid
    checks: dict[str, str] = field(default_factory=dict)  # check nodeid -> passed | failed | error | skipped
    failed: set[str] = field(default_factory=set)

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

    def unexplained(self, cells: list) -> list[str]:
        """Failed tests with no graded cell and no check (a crashed fixture, an interrupted run): harness breakage."""
        cell_keys = {bl.cell_key(c.suite, c.metric, c.method) for c in cells}
        return sorted(n for n in self.failed if self.key_of.get(n) not in cell_keys | set(self.checks))


class CompareMode:
    """One session's compare and/or update mode: tags items, then compares, reports and updates at the end."""

    def __init__(self, config: pytest.Config, ctx: RunContext):
        self.ctx = ctx
        self.files = load_baselines(config, ctx)
        self.outcomes = Outcomes()
        self.changes: list[bl.Change] = []
        self.machine: dict = {}  # the run record's machine, compared with the baseline's in the summary
        self.written: list[Path] = []

    @property
    def pinned(self) -> PinnedModels | None:
        """The models the run grades instead of training (None: train as usual)."""
        return self.files.pinned

    @property
    def train_unpinned(self) -> bool:
        """Whether an update trains the models the old baseline does not pin yet."""
        return self.files.train_unpinned

    @property
    def checks(self) -> dict[str, str]:
        """Outcomes of the tests that grade no cell (the method contract), by node id."""
        return self.outcomes.checks

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
            if self.files.baseline is not None:
                reason = bl.expected_failure(self.files.baseline, key, version, standard)
                if reason:
                    item.add_marker(pytest.mark.xfail(strict=True, reason=reason))

    # --- controller -----------------------------------------------------------------------------------

    def finish(self, session: pytest.Session, exitstatus: int, cells: list, run: dict, out_dir: Path) -> None:
        """Compare, write compare.md/.json, set the exit status; update the baseline when asked."""
        discover()
        registered = set(all_methods())
        unexplained = self.outcomes.unexplained(cells)
        clean_run = int(exitstatus) in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
        if self.files.baseline is not None:
            self._compare(session, cells, run, out_dir, registered, unexplained, clean_run)
        if self.files.update_path is not None:
            self._update(cells, run, registered, ok=clean_run and not unexplained)

    def _compare(self, session: pytest.Session, cells: list, run: dict, out_dir: Path, registered: set[str],
                 unexplained: list[str], clean_run: bool) -> None:
        files = self.files
        self.machine = run.get("machine") or {}
        self.changes = bl.compare(files.baseline, cells, self.checks, registered=registered,
                                  samples=run.get("samples"), profile=self.ctx.profile)
        self.written += bl.write_comparison(self.changes, out_dir, str(files.compare_path), files.baseline, run)
        if clean_run:
            failing = bl.fails(self.changes)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED if failing or unexplained else pytest.ExitCode.OK
        if unexplained:
            files.notes.append(f"{len(unexplained)} test(s) failed without a graded cell (harness breakage), "
                               f"e.g. {unexplained[0]}")

    def _update(self, cells: list, run: dict, registered: set[str], *, ok: bool) -> None:
        files = self.files
        if not ok:
            files.notes.append(f"baseline NOT updated ({files.update_path}): the run was interrupted or had "
                               "failures without a graded cell; fix them and run again")
            return
        try:
            new = bl.record_baseline(files.update_path, files.old, run, cells, self.checks, registered=registered)
        except BenchmarkError as exc:
            files.notes.append(f"baseline NOT updated ({files.update_path}): {exc}")
            return
        self.written.append(files.update_path)
        last = new["history"][-1]
        files.notes.append(f"baseline updated: {files.update_path} "
                           f"({', '.join(f'{v} {k}' for k, v in last['counts'].items())})")

    def terminal_summary(self, tr) -> None:
        """The regression report: regressions and improvements by name, new and not-comparable cells grouped."""
        files = self.files
        if files.baseline is not None:
            tr.write_sep("=", f"shortcut-bench compare with {files.compare_path}")
            tr.write_line(f"graded on the {len(files.pinned.models)} models the baseline pins (no training); "
                          f"paired by image against its per-sample scores")
            for diff in machine_differences(files.baseline.get("machine"), self.machine):
                tr.write_line(f"info: other machine than the baseline's: {diff}")
            for line, status in bl.report_lines(self.changes):
                tr.write_line(line, red=status in bl.FAILING, green=status == bl.IMPROVED)
            verdict = "REGRESSED: exit status 1" if bl.fails(self.changes) else \
                "no regressions: the failures above are expected, new or improvements (exit status 0 unless other tests broke)"
            tr.write_line(f"compare: {bl.summary_line(self.changes)}; {verdict}")
            if any(c.status == bl.IMPROVED for c in self.changes):
                tr.write_line("improvements show as XPASS(strict); record them with --bench-update-baseline")
        for note in files.notes:
            tr.write_line(note)


def _raw_outcome(report: pytest.TestReport) -> str | None:
    """A check's outcome as if no xfail mark applied: passed | failed | error | skipped.

    Only checks (tests without a cell) are read here. A cell's INCONCLUSIVE test is a plain pass by then, even under
    a baseline's strict xfail (benchmark.running.teststatus.settle_strict_xpass runs when the report is made), so
    it is "passed" here and never among :meth:`Outcomes.unexplained`'s failures.
    """
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
