"""pytest plugin: options, profile header, world/model fixtures and leaderboard collection."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from benchmark.errors import BenchmarkError, ShortcutNotLearned
from benchmark.profiles import Profile, resolve_profile
from benchmark.run_context import RUN_KEY, RunContext, context


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shortcut-bench", "shortcut-bench: grade attribution methods")
    group.addoption("--bench-profile", default=None, help="quick | standard | paper (default: quick on CPU, standard on GPU)")
    group.addoption("--bench-seed", type=int, default=0, help="seed for data, training and grading (default 0)")
    group.addoption("--bench-data", default="procedural", help="procedural | folder | kaggle | oxford-pet")
    group.addoption("--bench-data-root", default=None, help="folder with the real photos for --bench-data")
    group.addoption("--bench-cache-dir", default=None, help="where datasets/ and models/ live (default: rootdir)")
    group.addoption("--bench-reports-dir", default=None, help="where leaderboards are written (default: rootdir/reports)")
    group.addoption("--bench-device", default=None, help="torch device (default: cuda when present, else cpu)")
    group.addoption("--bench-methods", default=None, help="comma-separated method names to grade (default: all)")
    group.addoption("--bench-threshold", action="append", default=[], metavar="METRIC=VALUE",
                    help="override a metric's pass threshold (repeatable), e.g. AUC=0.8")
    group.addoption("--bench-shard", default=None, metavar="I/N",
                    help="grade only shard I of N of the methods (merge the records with `python -m benchmark merge`)")
    from benchmark.compare_mode import add_options

    add_options(group)
    group.addoption("--bench-cell-timeout", default=None, metavar="SECONDS",
                    help="per-cell time limit in seconds (default: the profile's; 0 = no limit)")
    group.addoption("--bench-sweep-levels", default=None, metavar="AREA[@OPACITY],...",
                    help="watermark strengths of the sweep (-m sweep) as footprint areas, optionally @opacity "
                         "(default: the profile's, e.g. 0.01,0.015,0.025,0.04 on quick)")
    group.addoption("--bench-mark", default=None, metavar="AREA[@OPACITY]",
                    help="the grid's watermark as a footprint area, optionally @opacity, e.g. 0.06 (default: the "
                         "profile's, 3.9%% of the image, opaque)")
    group.addoption("--bench-model-seeds", default=None, metavar="K",
                    help="train K seeds of every model; CIs then cover seeds, then images (hierarchical bootstrap) "
                         "(default: 1 on quick, 3 on standard and paper)")
    group.addoption("--bench-executor", default="in-process", metavar="in-process|ray|auto|ray://HOST:PORT",
                    help="where the grid's cells are computed: in this process (default; -n N for pytest-xdist), a "
                         "local Ray started for the run (ray), or a Ray cluster (auto, ray://HOST:PORT); needs "
                         "pip install -e '.[ray]'")
    group.addoption("--bench-channels-last", default="auto", choices=("auto", "on", "off"),
                    help="explain channels-last copies of the models (auto: on for the CPU, off on CUDA); "
                         "only float rounding differs")


def parse_thresholds(items: list[str]) -> dict[str, dict[str, float]]:
    """``["AUC=0.8", ...]`` -> {property key: {metric: value}}, validated against each metric's bounds."""
    from benchmark.errors import ConfigError, did_you_mean
    from benchmark.properties import PROPERTIES

    owner = {m.name: p for p in PROPERTIES.values() for m in p.metrics}
    out: dict[str, dict[str, float]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"{item!r} is not METRIC=VALUE (e.g. AUC=0.8)")
        if name not in owner:
            raise ConfigError(f"unknown metric {name!r}; choose one of {sorted(owner)}.{did_you_mean(name, owner)}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"threshold for {name} must be a number, got {value!r}") from None
        prop = owner[name]
        prop.with_thresholds({name: number})  # raises with the valid range when out of bounds
        out.setdefault(prop.key, {})[name] = number
    return out


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _suites_requested(config: pytest.Config) -> bool:
    """True when a loaded conftest marks its folder as shortcut-bench suites (suites/conftest.py does)."""
    return any(getattr(p, "SHORTCUT_BENCH_SUITES", False) for p in config.pluginmanager.get_plugins())


def _pin_threads(config: pytest.Config) -> None:
    # Oversubscribed torch threads on a small box run 10x slower: share the cores among xdist workers.
    if _is_worker(config):
        import torch

        workers = int(config.workerinput.get("workercount", 1))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _spread_over_gpus(config: pytest.Config) -> str | None:
    # xdist workers on a multi-GPU machine grade on cuda:{worker % n_gpus}; the model cache is keyed by
    # device type, so every worker loads the controller's trained models instead of training again.
    if not _is_worker(config):
        return None
    import torch

    from benchmark.devices import worker_device

    return worker_device(config.workerinput.get("workerid"), torch.cuda.device_count())


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    from benchmark.options import BenchOptions

    try:
        profile, reason = resolve_profile(config.getoption("--bench-profile"))
    except BenchmarkError as exc:
        raise pytest.UsageError(str(exc)) from None
    cache = config.getoption("--bench-cache-dir") or os.environ.get("SHORTCUT_BENCH_CACHE") or config.rootpath
    try:
        cell_timeout = check_usage(config, Path(cache))
        from benchmark.usage import check_model_seeds

        model_seeds = check_model_seeds(config.getoption("--bench-model-seeds"))
        from benchmark.sweep import parse_mark

        mark = parse_mark(config.getoption("--bench-mark"), profile.image_size)
    except BenchmarkError as exc:
        raise pytest.UsageError(str(exc)) from None
    options = BenchOptions(
        seed=config.getoption("--bench-seed"),
        data_source=config.getoption("--bench-data"),
        data_root=config.getoption("--bench-data-root"),
        cache_root=Path(cache),
        device=config.getoption("--bench-device") or _spread_over_gpus(config),
        cell_timeout_s=cell_timeout,
        channels_last={"auto": None, "on": True, "off": False}[config.getoption("--bench-channels-last")],
        model_seeds=model_seeds,
        mark=mark,
    )
    ctx = config.stash[RUN_KEY] = RunContext(profile=profile, profile_reason=reason, options=options)
    ctx.executor = _check_executor(config)
    config.addinivalue_line("markers", "sweep: the shortcut-strength sweep; runs only with -m sweep "
                                       "(pytest suites/ alone is the single-world grid)")
    from benchmark.sweep import check_levels, levels_for, parse_levels

    try:
        text = config.getoption("--bench-sweep-levels")
        ctx.sweep_levels = parse_levels(text) if text else levels_for(profile.name)
        check_levels(ctx.sweep_levels, profile.image_size)  # usage errors now, not mid-run
    except BenchmarkError as exc:
        raise pytest.UsageError(f"--bench-sweep-levels: {exc}") from None
    if sweep_requested(config) and config.getoption("--bench-compare"):
        # Compare mode promises to train nothing and grade pinned weights; no baseline pins the sweep's models.
        raise pytest.UsageError("-m sweep cannot run with --bench-compare: a baseline pins the grid's models, not the "
                                "sweep's (each level trains its own); run the sweep without --bench-compare")
    _pin_threads(config)
    try:
        ctx.thresholds = parse_thresholds(config.getoption("--bench-threshold"))
    except BenchmarkError as exc:
        raise pytest.UsageError(f"--bench-threshold: {exc}") from None
    if config.getoption("--bench-methods") or config.getoption("--bench-shard"):
        selected_methods(config)  # fail fast, before any data is built, on an unknown name or a bad shard
    from benchmark.compare_mode import configure as configure_compare

    # Loads and checks --bench-compare / --bench-update-baseline files and their pinned models; the run then
    # grades those models instead of training.
    configure_compare(config, ctx)
    if not _is_worker(config):
        ctx.collector = CellCollector(config)
        config.pluginmanager.register(ctx.collector, "shortcut-bench-collector")


def _check_executor(config: pytest.Config) -> str | None:
    """The parsed --bench-executor, refusing combinations that cannot work (before anything is built)."""
    from benchmark.ray_grid import parse_executor

    try:
        executor = parse_executor(config.getoption("--bench-executor"))
    except BenchmarkError as exc:
        raise pytest.UsageError(str(exc)) from None
    if executor is None:
        return None
    if int(getattr(config.option, "numprocesses", 0) or 0) > 0 or _is_worker(config):
        raise pytest.UsageError("--bench-executor ray spreads the cells over Ray workers itself: drop -n (pytest-xdist)")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise pytest.UsageError("--bench-executor needs Ray: pip install -e '.[ray]'") from None
    return executor


def check_usage(config: pytest.Config, cache: Path) -> float | None:
    """Validate seed, device, folders and cell timeout before anything is built; return the timeout override."""
    from benchmark.timelimit import check_timeout
    from benchmark.usage import check_device, check_output_dir, check_seed

    check_seed(config.getoption("--bench-seed"))
    check_device(config.getoption("--bench-device"))
    check_output_dir(cache, "--bench-cache-dir")
    check_output_dir(config.getoption("--bench-reports-dir") or config.rootpath / "reports", "--bench-reports-dir")
    return check_timeout(config.getoption("--bench-cell-timeout"), "--bench-cell-timeout")


def get_bench(config: pytest.Config, *, progress: bool = False):
    """The run's world and models, built once per process (file locks make processes share the cache)."""
    from benchmark.session import prepare

    ctx = context(config)
    if ctx.bench is None:
        try:
            ctx.bench = prepare(ctx.profile, ctx.options, progress=progress, pinned=ctx.compare.pinned,
                                train_unpinned=ctx.compare.train_unpinned)
        except ShortcutNotLearned as exc:
            raise pytest.UsageError(f"shortcut-bench stopped before grading: {exc}") from None
        except BenchmarkError as exc:
            raise pytest.UsageError(f"shortcut-bench could not prepare its data/models: {exc}") from None
    return ctx.bench


def sweep_requested(config: pytest.Config) -> bool:
    """Whether the run's -m expression selects the strength sweep's tests; otherwise they are deselected."""
    expr = config.getoption("markexpr", "") or ""
    if "sweep" not in expr:
        return False
    try:
        from _pytest.mark.expression import Expression

        # Would a test marked only "sweep" be selected? ("-m 'not sweep'" says no.)
        return bool(Expression.compile(expr).evaluate(lambda name, **kwargs: name == "sweep"))
    except Exception:  # pytest reports a malformed expression itself
        return False


def get_level(config: pytest.Config, level, *, progress: bool = False):
    """(LevelOutcome, Grader or None) of one sweep level, built once per process (the cache is shared)."""
    from benchmark.sweep import prepare_level

    ctx = context(config)
    if level.label not in ctx.sweep:
        try:
            ctx.sweep[level.label] = prepare_level(ctx.profile, ctx.options, level, progress=progress)
        except BenchmarkError as exc:
            raise pytest.UsageError(f"shortcut-bench could not prepare sweep level {level.label}: {exc}") from None
    return ctx.sweep[level.label]


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if _suites_requested(config) and not _is_worker(config) and not config.option.collectonly:
        # Build on the controller before xdist workers start, so they all find a warm cache; show the
        # training progress bars (pytest captures output during sessionstart otherwise).
        capman = config.pluginmanager.getplugin("capturemanager")
        t0 = time.perf_counter()
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            get_bench(config, progress=True)
            if sweep_requested(config):
                for level in context(config).sweep_levels:
                    get_level(config, level, progress=True)
        context(config).build_seconds = time.perf_counter() - t0


def pytest_report_header(config: pytest.Config) -> list[str]:
    ctx = context(config)
    lines = [f"shortcut-bench profile: {ctx.profile.name} ({ctx.profile_reason}): {ctx.profile.description}"]
    bench = ctx.bench
    if bench is not None:
        lines.append(f"shortcut-bench data: {bench.world.summary()}")
        seeds = bench.seeds()
        if len(seeds) > 1:
            lines.append(f"shortcut-bench training seeds {[r.seed for r in seeds]}: every cell pools their images, "
                         "CIs by hierarchical bootstrap (seeds, then images)")
        lines += [f"shortcut-bench {'' if len(seeds) == 1 else f'seed {r.seed} '}{m.header_line()}"
                  for r in seeds for m in (r.biased, r.control, r.absent)]
        lines.append(f"shortcut-bench world ready in {ctx.build_seconds or 0:.1f}s on {bench.device}")
    return lines


@pytest.fixture(scope="session")
def bench_profile(pytestconfig: pytest.Config) -> Profile:
    """The active size profile."""
    return context(pytestconfig).profile


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config):
    """The run's data and trained models (:class:`benchmark.session.Bench`)."""
    return get_bench(pytestconfig)


@pytest.fixture(scope="session")
def bench_world(bench):
    """The biased/control dataset with clean and stamped test sets."""
    return bench.world


@pytest.fixture(scope="session")
def biased_model(bench):
    """The model trained on the biased split (it learned the watermark shortcut)."""
    return bench.biased


@pytest.fixture(scope="session")
def control_model(bench):
    """The model trained on the control split (the watermark carries no label information)."""
    return bench.control


@pytest.fixture(scope="session")
def absent_model(bench):
    """The model trained on the same images without any watermark."""
    return bench.absent


# --- the grid: parametrisation, cells on user_properties, leaderboards on the controller ---------


def selected_methods(config: pytest.Config) -> list[str]:
    """Registered methods, filtered by --bench-methods (unknown names are a usage error)."""
    from benchmark.errors import did_you_mean
    from benchmark.methods import all_methods, discover

    discover()
    names = list(all_methods())
    wanted = config.getoption("--bench-methods")
    chosen = names
    if wanted:
        chosen = [w.strip() for w in wanted.split(",") if w.strip()]
        unknown = [w for w in chosen if w not in names]
        if unknown:
            hints = "".join(did_you_mean(u, names) for u in unknown)
            raise pytest.UsageError(f"--bench-methods: unknown method(s) {unknown}.{hints} `python -m benchmark list methods` lists them.")
    if config.getoption("--bench-shard"):
        from benchmark.merge import shard

        try:
            chosen = shard(chosen, config.getoption("--bench-shard"))
        except BenchmarkError as exc:
            raise pytest.UsageError(str(exc)) from None
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sweep_level" in metafunc.fixturenames:
        levels = context(metafunc.config).sweep_levels
        metafunc.parametrize("sweep_level", levels, ids=[lv.label for lv in levels])
    if "bench_method" in metafunc.fixturenames:
        metafunc.parametrize("bench_method", selected_methods(metafunc.config))
    if "bench_metric" in metafunc.fixturenames:
        prop = getattr(metafunc.cls, "prop", None)
        if prop is None:
            raise pytest.UsageError(f"{metafunc.function.__qualname__} asks for bench_metric but its class has no `prop`")
        metafunc.parametrize("bench_metric", [m.name for m in prop.metrics])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not sweep_requested(config):
        # The sweep trains a world per level: only an explicit -m sweep runs it.
        swept = [i for i in items if i.get_closest_marker("sweep")]
        if swept:
            config.hook.pytest_deselected(items=swept)
            items[:] = [i for i in items if not i.get_closest_marker("sweep")]
    if _suites_requested(config):
        context(config).compare.mark_items(items)


@pytest.fixture(scope="session")
def bench_thresholds(pytestconfig: pytest.Config) -> dict:
    """Threshold overrides from --bench-threshold: {property key: {metric: value}}."""
    return context(pytestconfig).thresholds


@pytest.fixture(scope="session")
def grader(pytestconfig: pytest.Config, bench):
    """Scores cells on this run's models, reusing attributions across metrics."""
    from benchmark.grading import Grader

    # Kept in the run context so the session-end figure reuses this process's attributions.
    ctx = context(pytestconfig)
    ctx.grader = Grader(bench)
    return ctx.grader


@pytest.fixture(scope="session")
def grade_cell(pytestconfig: pytest.Config, grader):
    """A callable (property, metric spec, method) -> Cell: computed by the Ray workers when they ran the grid,
    else graded here."""
    from benchmark.ray_grid import GRID

    precomputed = context(pytestconfig).precomputed

    def grade(prop, metric, method: str):
        cell = precomputed.get((GRID, prop.key, metric.name, method))
        return cell if cell is not None else grader.cell(prop, metric, method)

    return grade


@pytest.fixture(scope="session")
def sweep_cells(pytestconfig: pytest.Config):
    """A callable (sweep level, its Grader, method) -> the level's cells of the method: the Ray workers' when they
    graded the sweep, else graded here."""
    from benchmark.sweep import grade_level, level_cells

    precomputed = context(pytestconfig).precomputed

    def cells(level, grader, method: str) -> list:
        found = [precomputed.get((level.label, prop.key, m.name, method)) for prop, m in level_cells()]
        return found if all(c is not None for c in found) else grade_level(grader, [method])

    return cells


def grid_jobs(config: pytest.Config, items: list[pytest.Item]) -> list:
    """What the collected items will assert: the grid's (property, metric, method) cells, each method's contract
    checks, and the localisation cells of each method at each sweep level whose models learned the shortcut."""
    from benchmark.ray_grid import CellJob, ContractJob
    from benchmark.suite import PropertySuite
    from benchmark.sweep import level_cells

    ctx = context(config)
    jobs = []
    for item in items:
        cls, params = getattr(item, "cls", None), getattr(getattr(item, "callspec", None), "params", {})
        if "bench_method" not in params:
            continue
        method, fixtures = params["bench_method"], getattr(item, "fixturenames", ())
        if cls is not None and issubclass(cls, PropertySuite):
            key = cls.prop.key
            jobs.append(CellJob(key, params["bench_metric"], method, tuple(sorted(ctx.thresholds.get(key, {}).items()))))
        elif "check_contract" in fixtures:
            jobs.append(ContractJob(method, params["arch"], params["split"]))
        elif "sweep_cells" in fixtures and ctx.sweep.get(params["sweep_level"].label, (None, None))[1] is not None:
            label = params["sweep_level"].label  # an excluded level (no grader) has no cells: its tests skip
            jobs += [CellJob(prop.key, m.name, method, world=label) for prop, m in level_cells()]
    return list(dict.fromkeys(jobs))


def run_on_ray(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Compute every collected grid cell on Ray before the tests run; the tests then assert them."""
    from benchmark import ray_grid

    ctx = context(config)
    jobs = grid_jobs(config, items)
    if not jobs:
        return
    reporter = config.pluginmanager.getplugin("terminalreporter")
    say = reporter.write_line if reporter else (lambda line: None)
    try:
        joined = ray_grid.connect(ctx.executor)
    except (Exception, SystemExit) as exc:  # an unreachable cluster (Ray exits after its connect timeout)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise pytest.UsageError(f"--bench-executor {ctx.executor}: could not start or join Ray: {first}") from None
    say(f"shortcut-bench: {joined}; grading {len(jobs)} cells")
    t0 = time.perf_counter()
    worlds = {job.world for job in jobs}
    levels = {label: grader.bench for label, (_, grader) in ctx.sweep.items() if label in worlds}
    grid = ray_grid.RayGrid(get_bench(config), levels=levels, on_progress=say)
    try:
        ctx.precomputed = grid.run(jobs)
    finally:
        ray_grid.shutdown()
    say(f"shortcut-bench: Ray graded {len(ctx.precomputed)} cells in {time.perf_counter() - t0:.1f}s "
        f"({grid.n_workers} workers, {grid.retries} worker losses retried)")


@pytest.fixture(scope="session")
def sweep_bench(pytestconfig: pytest.Config):
    """A callable: sweep level -> (LevelOutcome, Grader or None when the level's model did not learn the shortcut)."""
    return lambda level: get_level(pytestconfig, level)


@pytest.fixture
def record_sweep(request: pytest.FixtureRequest):
    """Attach one sweep level's cells of one method (or its exclusion) to the test report."""
    from benchmark.sweep import SWEEP_PROPERTY, outcome_to_json

    def record(outcome) -> None:
        request.node.user_properties.append((SWEEP_PROPERTY, outcome_to_json(outcome)))

    return record


@pytest.fixture
def record_cell(request: pytest.FixtureRequest):
    """Attach a graded cell to the test report (travels from xdist workers to the controller)."""
    from benchmark.verdict import USER_PROPERTY

    def record(cell) -> None:
        request.node.user_properties.append((USER_PROPERTY, cell.to_json()))

    return record


class CellCollector:
    """Controller-side collector: cells arrive on report.user_properties (also from xdist workers)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.cells: dict[str, object] = {}
        self.sweep: dict[str, object] = {}  # test id -> one method's LevelOutcome at one level
        self.sweep_result: dict | None = None
        self.written_note = ""
        self.started = time.time()
        self.written: list[Path] = []
        self.heartbeat = None  # benchmark.progress.Heartbeat while the tests run on a terminal

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        from benchmark.progress import Heartbeat

        if context(self.config).executor and _suites_requested(self.config) and not self.config.option.collectonly:
            run_on_ray(self.config, session.items)

        # pytest's progress ticks once per finished test; a slow cell (KernelShap's first maps) is otherwise silent.
        if _suites_requested(self.config) and session.items and not self.config.option.collectonly:
            self.heartbeat = Heartbeat.on_terminal(len(session.items))
            if self.heartbeat is not None:
                self.heartbeat.start()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from benchmark.verdict import USER_PROPERTY, Cell

        context(self.config).compare.observe(report)
        if report.when == "teardown" and self.heartbeat is not None:
            self.heartbeat.tick()
        if report.when != "call":
            return
        from benchmark.sweep import SWEEP_PROPERTY, outcome_from_json

        for key, value in report.user_properties:
            if key == USER_PROPERTY:
                self.cells[report.nodeid] = Cell.from_json(value)
            elif key == SWEEP_PROPERTY:
                self.sweep[report.nodeid] = outcome_from_json(value)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        ctx = context(self.config)
        compare = ctx.compare
        checks = compare.checks
        out = Path(self.config.getoption("--bench-reports-dir") or self.config.rootpath / "reports")
        if int(exitstatus) == pytest.ExitCode.INTERRUPTED and (self.sweep or self.cells or checks):
            # Verdicts, ranks, detection limits and comparisons of the cells that happened to finish would be wrong,
            # not partial: nothing is written, and the previous reports stay as they were.
            what = "the sweep's sweep.json/md/png" if self.sweep else "reports"
            self.written_note = f"shortcut-bench: the run was interrupted: {what} not written (run it again)"
            self.sweep, self.cells = {}, {}
            return
        from benchmark.report import is_control
        from benchmark.verdict import NA

        graded = [c for c in self.cells.values() if c.outcome != NA]
        if self.cells and not graded:
            # Nothing to rank: every selected method is n/a for every selected property.
            methods = sorted({c.method for c in self.cells.values()})
            self.written_note = (f"shortcut-bench: no cell was graded: {', '.join(methods)} "
                                 f"{'is' if len(methods) == 1 else 'are'} n/a for every selected property "
                                 f"({next(iter(self.cells.values())).message}); no report written")
            self.cells = {}
            return
        if graded and all(is_control(c.method) for c in graded):
            self.written_note = ("shortcut-bench: only controls were graded ("
                                 f"{', '.join(sorted({c.method for c in graded}))}): the reports rank no real method")
        if self.sweep:
            from benchmark.sweep import merge_outcomes, sweep_record, write_sweep

            self.sweep_result = sweep_record(merge_outcomes(list(self.sweep.values())),
                                             _run_info(self.config, self.started))
            self.written += write_sweep(self.sweep_result, out)
            if not self.cells and (out / "run.json").is_file():
                # A grid report already here gains the curves and the detection-limit column.
                from benchmark.html import write_html
                from benchmark.merge import load_record
                from benchmark.report import write_reports

                try:
                    record = load_record(out / "run.json")
                    self.written += [*write_reports(record, out), write_html(record, out)]
                except BenchmarkError as exc:
                    self.written_note = f"the grid's reports were not updated with the sweep: {exc}"
        if not self.cells and not checks:
            return
        from benchmark.html import write_html
        from benchmark.report import build_record, write_reports

        record = build_record(list(self.cells.values()), _run_info(self.config, self.started), checks=checks)
        bench = ctx.bench
        if self.cells:
            self.written += write_reports(record, out)
            if bench is not None:
                from benchmark.figures import saliency_grid
                from benchmark.grading import Grader

                methods = sorted({c.method for c in self.cells.values()})
                try:
                    grader = ctx.grader or Grader(bench)
                    self.written.append(saliency_grid(grader, methods, out / "flipped_examples.png"))
                except Exception as exc:  # the figure illustrates the reports; its failure must not lose them
                    self.written_note = f"shortcut-bench: flipped_examples.png not written: {type(exc).__name__}: {exc}"
            self.written.append(write_html(record, out))
        compare.finish(session, exitstatus, list(self.cells.values()), record["run"], out)
        self.written += compare.written

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        if self.cells:
            from tabulate import tabulate

            from benchmark.report import overall_rows, summarise

            summary = summarise(list(self.cells.values()))
            tr.write_sep("=", "shortcut-bench: method × property")
            tr.write_line(tabulate(overall_rows(summary), headers=["rank", "method", "effect", "passed", *summary["suites"]]))
        if self.sweep:
            limits = self.sweep_result["detection_limits"]
            excluded = [lv["label"] for lv in self.sweep_result["levels"] if not lv["learned"]]
            tr.write_sep("=", "shortcut-bench: strength sweep (localisation detection limits)")
            for m in sorted(limits, key=lambda m: (limits[m] is None, m)):
                tr.write_line(f"{m}: {limits[m] or 'none'}")
            if excluded:
                tr.write_line(f"excluded levels (the biased model did not learn the shortcut): {', '.join(excluded)}")
        context(self.config).compare.terminal_summary(tr)
        if self.written_note:
            tr.write_line(self.written_note)
        if self.written:
            tr.write_line(f"reports: {', '.join(str(p) for p in self.written)}")


def _run_info(config: pytest.Config, started: float) -> dict:
    import dataclasses

    import torch

    from benchmark.machine import describe_machine
    from benchmark.options import describe
    from benchmark.report import git_hash, package_versions

    ctx = context(config)
    profile, options = ctx.profile, ctx.options
    info = {
        "profile": dataclasses.asdict(profile),
        "profile_reason": ctx.profile_reason,
        "seed": options.seed,
        "options": describe(options),
        "git": git_hash(config.rootpath),
        "versions": package_versions(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "machine": describe_machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        "workers": int(getattr(config.option, "numprocesses", 0) or 0),
        "executor": config.getoption("--bench-executor"),
    }
    if config.getoption("--bench-shard"):
        info["shard"] = config.getoption("--bench-shard")
    bench = ctx.bench
    if bench is not None:
        from benchmark.cache import stable_hash
        from benchmark.grading import graded_indices

        info["models"] = {name: m.card for name, m in bench.arm_models().items()}
        info["model_seeds"] = [r.seed for r in bench.seeds()]
        info["data"] = bench.world.manifest
        # Every model graded, with the file and sha256 of its exact weights: what a baseline pins.
        info["weights"] = {name: {"file": str(m.weights_path), "sha256": m.card["weights_sha256"], **m.arch_spec,
                                  "card": m.card, "pinned_by": m.pinned_by}
                           for name, m in bench.all_models().items()}
        # Test-set positions of the graded images, in the order of every cell's per-sample scores (per training
        # seed when there are several: each seed's biased model flips its own cats).
        seeds = bench.seeds()
        info["samples"] = ([int(i) for i in graded_indices(bench)] if len(seeds) == 1 else
                           {str(r.seed): [int(i) for i in graded_indices(bench.for_seed(r))] for r in seeds})
        # The cache keys that name the exact artefacts graded: same keys + seed + versions = same run.
        info["config_hashes"] = {"profile": stable_hash(profile), "data": bench.world.key,
                                 "biased_model": bench.biased.card["key"], "control_model": bench.control.card["key"],
                                 "absent_model": bench.absent.card["key"],
                                 "biased_weights_sha256": bench.biased.card.get("weights_sha256"),
                                 "control_weights_sha256": bench.control.card.get("weights_sha256")}
    return info


# --- method contract fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def contract_models(bench) -> dict:
    """{arch: {"biased": model, "control": model}}: the run's trained models for the profile's architecture,
    seeded untrained models for the other architectures the profile's contract covers."""
    return bench.contract_models()


@pytest.fixture(scope="session")
def contract_batch(grader):
    """(x, y, masks): the first 8 graded stamped images as tensors, with their watermark masks."""
    from benchmark.contract import contract_batch as batch

    return batch(grader)


@pytest.fixture(scope="session")
def check_contract(pytestconfig: pytest.Config, grader):
    """A callable (method, arch, split) -> ContractOutcome: the Ray workers' when they ran the grid, else checked
    here."""
    from benchmark.contract import contract_outcome
    from benchmark.ray_grid import ContractJob

    precomputed = context(pytestconfig).precomputed

    def check(method: str, arch: str, split: str):
        found = precomputed.get(ContractJob(method, arch, split).key)
        return found if found is not None else contract_outcome(grader, method, arch, split)

    return check
