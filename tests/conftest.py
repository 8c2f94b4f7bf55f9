"""Shared fixtures for the project's own tests, the fast tier, and sharing under pytest-xdist.

The fast tier: ``pytest tests/ -m "not slow"``. Nothing is marked ``slow`` by hand. A test is slow when it
requests, directly or through its fixtures, one of the fixtures in ``SLOW_FIXTURES`` (the ways a test can
train, start processes, start Ray or a browser, or build real photos), and ``pytest_collection_modifyitems``
marks it. The tier is kept honest while the tests run: a test not marked slow that trains a model
(``benchmark.models.train._fit``) or starts a process (``subprocess``, ``multiprocessing``, and so Ray and
browsers; ``git`` alone is let through) fails, naming the fixture to request (tests/test_fast_tier.py checks this).

Under pytest-xdist (``pytest tests/ -n 2``) the tests are distributed by module: ``--dist loadfile`` in place of
``load`` (xdist's default with ``-n``, or given); any other ``--dist`` (loadscope, worksteal, ...) is kept. Many slow tests read
one module-scoped fixture (a ``pytest suites/`` run, a tiny world, a local Ray): a module on one worker builds it
once, where ``load`` would build it on both workers, and the Ray tests (all in test_ray.py) never start two Rays
at once. ``--dist loadgroup`` would group finer, but with pytest 9.2 and pytest-xdist 3.8 it silently does not
group at all (pytest-xdist issue #1386). The quick world (``quick_cache``) and the real photos are built once
per run in a folder every worker shares (the project's file locks make the other workers wait and load), and
child processes started from a worker get that worker's share of the CPU threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The project's tests grade afresh: the quick world's folder is shared by many runs, and a run that read cells another
# test stored would compare a result with itself (an executor's byte identity, a fault's ERROR cell). The result
# store's own tests unset this for the runs they make (tests/test_store.py).
os.environ["SHORTCUT_BENCH_FRESH"] = "1"

# The fixtures that make a test slow, and why. A fixture that trains or starts processes itself requests one of
# these (e.g. a module's tiny world requests ``trains``), so its tests are slow by the same rule.
SLOW_FIXTURES = {
    "quick_cache": "builds the quick world and trains its three models (about a minute on 2 cores, once per run)",
    "quick_bench": "loads the quick world's trained models (needs quick_cache)",
    "trains": "trains models in the test's process",
    "run_child": "runs child processes (pytest suites/, python -m benchmark, scripts)",
    "spawn_context": "starts worker processes (multiprocessing)",
    "starts_ray": "starts a local Ray",
    "chromium": "starts a headless browser",
    "real_photo_folder": "builds a folder of real photographs",
}


# --- the fast tier: mark by construction, guard while running ------------------------------------------


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        costs = sorted(SLOW_FIXTURES.keys() & set(item.fixturenames))  # fixturenames: every fixture, transitively
        if costs:
            item.add_marker(pytest.mark.slow(*costs))


def _refuse(what: str, fixture: str):
    def refused(*args, **kwargs):
        pytest.fail(f"this test {what}, but it is not marked slow, so it would run in the fast tier "
                    f"(-m 'not slow'): request {fixture} (tests/conftest.py), which marks it slow")

    return refused


# The one child a fast test may start: the run record asks git for the commit (milliseconds; no Python, no torch).
CHEAP_CHILDREN = frozenset({"git"})


def _refuse_children():
    execute_child = subprocess.Popen._execute_child
    refused = _refuse("spawns a subprocess", "the `run_child` fixture")

    def guarded(self, args, *rest, **kwargs):
        program = args if isinstance(args, (str, bytes, os.PathLike)) else args[0]
        if Path(os.fsdecode(program)).name in CHEAP_CHILDREN:
            return execute_child(self, args, *rest, **kwargs)
        return refused()

    return guarded


def _guard(item: pytest.Item) -> pytest.MonkeyPatch | None:
    """Patches that fail a test not marked slow which trains or starts a process; None for a slow test."""
    if item.get_closest_marker("slow") is not None:
        return None
    import multiprocessing.process

    import benchmark.models.train as train

    mp = pytest.MonkeyPatch()
    mp.setattr(train, "_fit", _refuse("trains a model (benchmark.models.train._fit)",
                                      "the `trains` fixture (or one that trains, like `quick_cache`)"))
    mp.setattr(subprocess.Popen, "_execute_child", _refuse_children())
    mp.setattr(multiprocessing.process.BaseProcess, "start",
               _refuse("starts a process (multiprocessing)", "the `spawn_context` fixture"))
    return mp


# Setup and call, not only the test body: a broader fixture a fast test requests is built during its setup.
# Teardown is left alone, where the last test of a module may finalize the module's (slow) fixtures.
def _guarded(item: pytest.Item):
    mp = _guard(item)
    try:
        return (yield)
    finally:
        if mp is not None:
            mp.undo()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    return (yield from _guarded(item))


@pytest.fixture(scope="session")
def trains():
    """Declares that the test, or the fixture requesting this, trains models in the test's process (so: slow)."""


@pytest.fixture(scope="session")
def starts_ray():
    """Declares that the test starts a local Ray, in its process or a child's (so: slow). They are all in
    test_ray.py, so under xdist they run on one worker, one at a time (see the module docstring)."""


@pytest.fixture(scope="session")
def spawn_context():
    """``multiprocessing``'s "spawn" context (fresh interpreters): its ``Pool``, ``Process``, ``Queue``, ``Barrier``."""
    import multiprocessing

    return multiprocessing.get_context("spawn")


# --- child processes ----------------------------------------------------------------------------------


class ChildRunner:
    """Runs the tests' child processes: from the repository root, output captured as text, under a time limit.

    Inside an xdist worker the child (and every process it starts) is held to the worker's share of the CPU
    threads (``benchmark.running.threads``: ``$SHORTCUT_BENCH_THREADS`` and the thread pools' variables), so two workers
    each running a ``pytest suites/`` child do not oversubscribe 2 cores. ``env`` adds or overrides variables
    (after the pinning), ``unset`` removes inherited ones.
    """

    def __init__(self, cwd: Path = ROOT):
        self.cwd = cwd

    def env(self, extra: Mapping[str, str] | None = None, unset: Iterable[str] = ()) -> dict[str, str]:
        from benchmark.running.threads import worker_child_env

        drop = set(unset)
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(worker_child_env())
        env.update(extra or {})
        return env

    def __call__(self, cmd: Sequence[str | Path], *, env: Mapping[str, str] | None = None, unset: Iterable[str] = (),
                 timeout: float = 1800, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(c) for c in cmd], cwd=cwd or self.cwd, env=self.env(env, unset),
                              capture_output=True, text=True, timeout=timeout)

    def python(self, *args: str | Path, **kwargs) -> subprocess.CompletedProcess:
        """``python ARGS`` with this interpreter."""
        return self([sys.executable, *args], **kwargs)

    def pytest(self, *args: str | Path, **kwargs) -> subprocess.CompletedProcess:
        """``python -m pytest -p no:cacheprovider ARGS`` (children write no .pytest_cache into the checkout)."""
        return self.python("-m", "pytest", "-p", "no:cacheprovider", *args, **kwargs)

    def bench(self, *args: str | Path, **kwargs) -> subprocess.CompletedProcess:
        """``python -m benchmark ARGS`` (the command line)."""
        return self.python("-m", "benchmark", *args, **kwargs)

    def popen(self, cmd: Sequence[str | Path], *, env: Mapping[str, str] | None = None, unset: Iterable[str] = (),
              cwd: Path | None = None) -> subprocess.Popen:
        """A started child with text pipes on stdout and stderr, for a test that talks to it while it runs."""
        return subprocess.Popen([str(c) for c in cmd], cwd=cwd or self.cwd, env=self.env(env, unset),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="session")
def run_child():
    """The :class:`ChildRunner` every test uses to start a process (so: slow)."""
    return ChildRunner()


# --- expensive worlds, built once per run -----------------------------------------------------------------


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """``name`` in a folder every xdist worker of this run shares (the controller's base temp folder, the parent
    of each worker's own), or in this session's base temp folder when it runs alone."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def quick_cache(tmp_path_factory):
    """A cache folder holding the quick profile's data and both trained models (seed 0, CPU).

    Building it costs about a minute on 2 cores; every test that needs the trained world shares it
    (subprocess runs point ``--bench-cache-dir`` at it and get cache hits). Under xdist every worker points at the
    same folder and calls the same build: the data and each model are built under a file lock
    (``benchmark.cache.lock_for``), so one worker builds each, the others wait and load it.
    """
    from benchmark.options import BenchOptions
    from benchmark.profiles import PROFILES
    from benchmark.session import prepare

    # SHORTCUT_BENCH_TEST_CACHE reuses a folder across test sessions while developing; CI points it at a fresh one.
    reuse = os.environ.get("SHORTCUT_BENCH_TEST_CACHE")
    root = Path(reuse) if reuse else shared_dir(tmp_path_factory, "quick-cache")
    prepare(PROFILES["quick"], BenchOptions(cache_root=root, device="cpu"), progress=False)
    return root


@pytest.fixture(scope="session")
def quick_bench(quick_cache):
    """The quick profile's :class:`benchmark.session.Bench` (data and both models, loaded from ``quick_cache``)."""
    from benchmark.options import BenchOptions
    from benchmark.profiles import PROFILES
    from benchmark.session import prepare

    return prepare(PROFILES["quick"], BenchOptions(cache_root=quick_cache, device="cpu"), progress=False)


@pytest.fixture(scope="module")
def script(request):
    """The benchmarks/ script a test module names in its ``SCRIPT`` path, loaded as a module (in sys.modules while
    the module's tests run: a script's dataclasses look their module up there)."""
    import importlib.util

    path = request.module.SCRIPT
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture
def model_builds(monkeypatch) -> list:
    """The ``benchmark build`` commands a benchmarks/ script starts during the test, recorded and not run (any other
    command runs)."""
    import subprocess

    built, real = [], subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: built.append(cmd) if "build" in cmd else real(cmd, **kw))
    return built


@pytest.fixture(scope="session")
def real_photo_folder(tmp_path_factory):
    """300 JPEGs per class at 96 px, cut from scikit-image's colour photographs (tests/fixtures/real_photos.py);
    built once per run under a file lock, in the folder the xdist workers share."""
    import importlib.util

    from benchmark.cache import lock_for

    spec = importlib.util.spec_from_file_location("real_photos", ROOT / "tests" / "fixtures" / "real_photos.py")
    real_photos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real_photos)
    root = shared_dir(tmp_path_factory, "real-photos") / "per-class-300"
    done = root.with_name(root.name + ".complete")  # beside the folder: the loader reads every file in it
    with lock_for(root):
        if not done.exists():
            real_photos.make_folder(root, per_class=300)
            done.touch()
    return root


# --- a browser ------------------------------------------------------------------------------------------

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="session")
def chromium(tmp_path_factory, run_child):
    """A callable rendering a local HTML file in headless Chromium: returns (DOM after scripts ran, console lines).

    Skips with the reason when no browser is installed (.ci/run installs Debian's `chromium`).
    """
    import shutil

    exe = next((shutil.which(c) for c in CHROMIUM_CANDIDATES if shutil.which(c)), None)
    if exe is None:
        pytest.skip(f"no headless browser found (looked for {', '.join(CHROMIUM_CANDIDATES)}); "
                    "install Debian's `chromium` package (.ci/run does) to run the browser checks")

    def render(path, screenshot=None):
        # screenshot: a PNG path to capture the first screen at 1400 px width instead of dumping the DOM.
        profile = tmp_path_factory.mktemp("chromium-profile")
        what = ["--dump-dom"] if screenshot is None else [f"--screenshot={screenshot}", "--window-size=1400,1000",
                                                          "--hide-scrollbars"]
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *what,
               path.resolve().as_uri()]
        proc = run_child(cmd, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # Chromium logs every console message (log, warning, error, uncaught exception) as a CONSOLE line.
        console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
        return proc.stdout, console

    return render


# --- reliability figures: tests record each injected fault and each bad input they try ------------------

RELIABILITY_PROPERTY = "shortcut_bench_reliability"  # key on report.user_properties (survives xdist)


def _recorder(request: pytest.FixtureRequest, category: str):
    import json

    def record(kind: str, ok: bool, lost: int = 0) -> None:
        entry = {"category": category, "kind": kind, "ok": bool(ok), "lost": int(lost), "test": request.node.nodeid}
        request.node.user_properties.append((RELIABILITY_PROPERTY, json.dumps(entry)))

    return record


@pytest.fixture(autouse=True)
def no_held_sibling_maps():
    """Each test computes its own maps: none that another test's call held for a sibling method is handed
    to it (benchmark.methods._variants; tests/test_shared_passes.py tests the sharing itself)."""
    from benchmark.methods._variants import HELD

    HELD.clear()


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, as each xdist worker has (two on a shared 2-core box are many times slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def record_fault(request):
    """``record_fault(kind, contained, lost=0)``: count one injected fault and whether the run contained it.

    Record before asserting, so a fault that escaped still shows up in the figures as not contained.
    """
    return _recorder(request, "fault")


@pytest.fixture
def record_bad_input(request):
    """``record_bad_input(kind, clear)``: count one bad user input and whether it got a clear error."""
    return _recorder(request, "bad_input")


class ReliabilityRecorder:
    """Controller-side collector of the entries tests attach to their reports (also from xdist workers)."""

    def __init__(self):
        self.records: list[dict] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        import json

        if report.when == "call":
            self.records += [json.loads(v) for k, v in report.user_properties if k == RELIABILITY_PROPERTY]


RELIABILITY_KEY = pytest.StashKey[ReliabilityRecorder]()


def pytest_configure(config: pytest.Config) -> None:
    # -n N alone means xdist's "load"; distribute by module instead (see the module docstring). The scheduler is
    # chosen when the session starts, after this.
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadfile"
    if not hasattr(config, "workerinput"):
        config.stash[RELIABILITY_KEY] = recorder = ReliabilityRecorder()
        config.pluginmanager.register(recorder, "shortcut-bench-reliability")


def reliability_figures(records: list[dict]) -> dict:
    """The summary figures computed from the recorded entries (never hard-coded)."""
    faults = [r for r in records if r["category"] == "fault"]
    bad = [r for r in records if r["category"] == "bad_input"]
    return {
        "faults_injected": len(faults),
        "faults_contained": sum(r["ok"] for r in faults),
        "results_lost": sum(r["lost"] for r in faults),
        "bad_inputs_tried": len(bad),
        "bad_inputs_with_clear_errors": sum(r["ok"] for r in bad),
    }


def _summary_line(fig: dict) -> str:
    return (f"reliability: faults injected {fig['faults_injected']}, contained {fig['faults_contained']}, "
            f"results lost {fig['results_lost']}, bad inputs tried {fig['bad_inputs_tried']}, "
            f"with clear errors {fig['bad_inputs_with_clear_errors']}")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    recorder = config.stash.get(RELIABILITY_KEY, None)
    if recorder is None or not recorder.records:
        return
    records = recorder.records
    import os
    from pathlib import Path

    from benchmark.cache import atomic_write_json

    fig = reliability_figures(records)
    tr = terminalreporter
    tr.write_sep("=", "shortcut-bench reliability")
    tr.write_line(_summary_line(fig))
    escaped = [f"  {r['category']} {r['kind']!r} not handled ({r['test']})" for r in records if not r["ok"]]
    for line in escaped:
        tr.write_line(line)
    path = Path(os.environ.get("SHORTCUT_BENCH_RELIABILITY_JSON") or config.rootpath / "reports" / "reliability.json")
    atomic_write_json(path, {**fig, "records": sorted(records, key=lambda r: (r["category"], r["kind"], r["test"]))})
    tr.write_line(f"reliability figures: {path}")
