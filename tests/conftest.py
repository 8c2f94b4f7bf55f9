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
