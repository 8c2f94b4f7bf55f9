"""Shared fixtures for the project's own tests: one quick-profile world, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def quick_cache(tmp_path_factory):
    """A cache folder holding the quick profile's data and both trained models (seed 0, CPU).

    Building it costs about a minute on 2 cores; every test that needs the trained world shares it
    (subprocess runs point ``--bench-cache-dir`` at it and get cache hits).
    """
    from benchmark.options import BenchOptions
    from benchmark.profiles import PROFILES
    from benchmark.session import prepare

    # SHORTCUT_BENCH_TEST_CACHE reuses a folder across test sessions while developing (CI always builds afresh).
    reuse = os.environ.get("SHORTCUT_BENCH_TEST_CACHE")
    root = Path(reuse) if reuse else tmp_path_factory.mktemp("quick-cache")
    prepare(PROFILES["quick"], BenchOptions(cache_root=root, device="cpu"), progress=False)
    return root


@pytest.fixture(scope="session")
def quick_bench(quick_cache):
    """The quick profile's :class:`benchmark.session.Bench` (data and both models, loaded from ``quick_cache``)."""
    from benchmark.options import BenchOptions
    from benchmark.profiles import PROFILES
    from benchmark.session import prepare

    return prepare(PROFILES["quick"], BenchOptions(cache_root=quick_cache, device="cpu"), progress=False)


CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """A callable rendering a local HTML file in headless Chromium: returns (DOM after scripts ran, console lines).

    Skips with the reason when no browser is installed (.ci/run installs Debian's `chromium`).
    """
    import shutil
    import subprocess

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
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
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
