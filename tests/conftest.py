"""Shared fixtures for the project's own tests: one quick-profile world, built once per test session."""

from __future__ import annotations

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

    root = tmp_path_factory.mktemp("quick-cache")
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

    def render(path):
        profile = tmp_path_factory.mktemp("chromium-profile")
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--dump-dom",
               path.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # Chromium logs every console message (log, warning, error, uncaught exception) as a CONSOLE line.
        console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
        return proc.stdout, console

    return render
