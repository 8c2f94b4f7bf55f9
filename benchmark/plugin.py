"""pytest plugin: the hooks and thin fixtures that hand a run's options, worlds and cells to their modules."""

from __future__ import annotations

import atexit
import contextlib
import gc
import time
import warnings
from collections.abc import Callable

import pytest

from benchmark.errors import BenchmarkError
from benchmark.grading.grader import Grader
from benchmark.grading.verdict import USER_PROPERTY, Cell
from benchmark.options import MarkLevel
from benchmark.profiles import PROFILES
from benchmark.running import configure, teststatus, worlds
from benchmark.running.collector import CellCollector
from benchmark.running.jobs import Results
from benchmark.running.run_context import RunContext, context
from benchmark.running.scheduling import MethodScheduling, method_costs, order_by_cost
from benchmark.running.sweep import SWEEP_PROPERTY, LevelOutcome, outcome_to_json
from benchmark.session import Bench


def pytest_addoption(parser: pytest.Parser) -> None:
    configure.add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    ctx = configure.build_context(config)
    if configure.suites_requested(config):
        # The interpreter's last collections walk every object a grid left alive (a second or more, while the xdist
        # controller waits for its workers to exit); frozen at exit, they are freed without that walk.
        atexit.register(gc.freeze)
    config.addinivalue_line("markers", "sweep: the shortcut-strength sweep; runs only with -m sweep "
                                       "(pytest suites/ alone is the single-world grid)")
    if not configure.is_worker(config):
        ctx.collector = CellCollector(config)
        config.pluginmanager.register(ctx.collector, "shortcut-bench-collector")


def _usage(call: Callable[[], object]):
    # A world that cannot be built ends the run with one line saying why, never a traceback.
    try:
        return call()
    except BenchmarkError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if configure.suites_requested(config) and not configure.is_worker(config) and not config.option.collectonly:
        # Build on the controller before xdist workers start, so they all find a warm cache; show the
        # training progress bars (pytest captures output during sessionstart otherwise).
        ctx = context(config)
        capman = config.pluginmanager.getplugin("capturemanager")
        t0 = time.perf_counter()
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            _usage(lambda: worlds.get_bench(ctx, progress=True))
            if configure.sweep_requested(config):
                for level in ctx.sweep_levels:
                    _usage(lambda level=level: worlds.get_level(ctx, level, progress=True))
        ctx.build_seconds = time.perf_counter() - t0


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session):
    # After this process's last test, before any sessionfinish (where an xdist worker reports that it finished, and
    # the controller draws the figure): the maps this process graded, stored.
    try:
        return (yield)
    finally:
        if configure.suites_requested(session.config):
            try:
                worlds.keep_figure_maps(context(session.config))
            except Exception as exc:  # a cache write: the figure's maps are then explained again, the results stand
                warnings.warn(f"shortcut-bench: the figure's maps were not stored: {type(exc).__name__}: {exc}",
                              stacklevel=1)


def profile_line(profile, reason: str) -> str:
    """The header's first line: the profile, why it was chosen, what it is, and the architecture that replaced its
    model (the profile's description names its own)."""
    line = f"shortcut-bench profile: {profile.name} ({reason}): {profile.description}"
    registered = PROFILES.get(profile.name)
    if registered is not None and registered.arch != profile.arch:
        line += f"; --bench-arch {profile.arch}: a vision transformer trains and is graded in place of that model"
    return line


def pytest_report_header(config: pytest.Config) -> list[str]:
    ctx = context(config)
    lines = [profile_line(ctx.profile, ctx.profile_reason)]
    bench = ctx.bench
    if bench is not None:
        lines.append(f"shortcut-bench data: {bench.world.summary()}")
        seeds = bench.seeds()
        if len(seeds) > 1:
            lines.append(f"shortcut-bench training seeds {[r.seed for r in seeds]}: every cell pools their images, "
                         "CIs by a t interval on the seeds' means")
        lines += [f"shortcut-bench {'' if len(seeds) == 1 else f'seed {r.seed} '}{m.header_line()}"
                  for r in seeds for m in (r.biased, r.control, r.absent)]
        lines.append(f"shortcut-bench world ready in {ctx.build_seconds or 0:.1f}s on {bench.device}")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sweep_level" in metafunc.fixturenames:
        levels = context(metafunc.config).sweep_levels
        metafunc.parametrize("sweep_level", levels, ids=[lv.label for lv in levels])
    if "bench_method" in metafunc.fixturenames:
        metafunc.parametrize("bench_method", configure.selected_methods(metafunc.config))
    if "bench_metric" in metafunc.fixturenames:
        prop = getattr(metafunc.cls, "prop", None)
        if prop is None:
            raise pytest.UsageError(f"{metafunc.function.__qualname__} asks for bench_metric but its class has no `prop`")
        metafunc.parametrize("bench_metric", [m.name for m in prop.metrics])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not configure.sweep_requested(config):
        # The sweep trains a world per level: only an explicit -m sweep runs it.
        swept = [i for i in items if i.get_closest_marker("sweep")]
        if swept:
            config.hook.pytest_deselected(items=swept)
            items[:] = [i for i in items if not i.get_closest_marker("sweep")]
    if configure.suites_requested(config):
        context(config).compare.mark_items(items)
        if configure.is_worker(config):
            # Every worker sorts its identical collection the same way; MethodScheduling keeps that order.
            order_by_cost(items, method_costs(configure.reports_dir(config.getoption, config.rootpath)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log) -> MethodScheduling | None:
    # Under -n N each worker has its own memo: spreading one method's cells over workers computes its maps in each.
    if configure.suites_requested(config) and config.getoption("dist") == "load":
        return MethodScheduling(config, log)
    return None


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    # A passing test of an INCONCLUSIVE cell shows as "inconclusive" (?), counted apart from passes and failures.
    return teststatus.teststatus(report)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    # Outermost, after pytest's xfail handling: compare mode's strict xfail must not fail an INCONCLUSIVE cell.
    report = yield
    teststatus.settle_strict_xpass(report)
    return report


# --- fixtures: each hands one thing from the run context to a suite --------------------------------------


@pytest.fixture(scope="session")
def bench_context(pytestconfig: pytest.Config) -> RunContext:
    """The session's run context (profile, options, thresholds, what was built)."""
    return context(pytestconfig)


@pytest.fixture(scope="session")
def bench(bench_context: RunContext) -> Bench:
    """The run's data and trained models."""
    return _usage(lambda: worlds.get_bench(bench_context))


@pytest.fixture(scope="session")
def bench_results(bench_context: RunContext) -> Results:
    """The run's cells and contract outcomes: an executor's when it computed them, else the result store's, else
    graded here on demand."""
    return Results(lambda: _usage(lambda: worlds.grader_of(bench_context)), bench_context.precomputed,
                   lambda world: worlds.run_store(bench_context, world))


@pytest.fixture(scope="session")
def bench_thresholds(bench_context: RunContext) -> dict[str, dict[str, float]]:
    """Threshold overrides from --bench-threshold: {property key: {metric: value}}."""
    return bench_context.thresholds


@pytest.fixture(scope="session")
def sweep_bench(bench_context: RunContext) -> Callable[[MarkLevel], tuple[LevelOutcome, Grader | None]]:
    """A callable: sweep level -> (LevelOutcome, Grader or None when the level's model did not learn the shortcut)."""
    return lambda level: _usage(lambda: worlds.get_level(bench_context, level))


@pytest.fixture
def record_cell(request: pytest.FixtureRequest) -> Callable[[Cell], None]:
    """Attach a graded cell to the test report (travels from xdist workers to the controller)."""
    return lambda cell: request.node.user_properties.append((USER_PROPERTY, cell.to_json()))


@pytest.fixture
def record_sweep(request: pytest.FixtureRequest) -> Callable[[LevelOutcome], None]:
    """Attach one sweep level's cells of one method (or its exclusion) to the test report."""
    return lambda outcome: request.node.user_properties.append((SWEEP_PROPERTY, outcome_to_json(outcome)))
