"""The fast tier is honest: tests that train or start processes are marked slow by the fixtures they request, and a
test that is not marked slow cannot train or start a process (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")

PROBES = '''
import subprocess
import sys

import pytest


def test_plain():
    assert True


def test_asks_git():
    subprocess.run(["git", "--version"], capture_output=True)


def test_spawns_unmarked():
    subprocess.run([sys.executable, "-c", "pass"])


def test_spawns_through_the_fixture(run_child):
    assert run_child.python("-c", "print(7)").stdout == "7\\n"


def test_trains_unmarked():
    import benchmark.models.train as train

    train._fit(None, None, None, None, False)


def test_starts_a_process_unmarked():
    import multiprocessing

    multiprocessing.get_context("spawn").Process(target=print).start()


@pytest.fixture(scope="module")
def world(trains):
    return "built"


def test_slow_through_a_module_fixture(world):
    assert world == "built"
'''


@pytest.fixture
def probes(pytester):
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makepyfile(test_probes=PROBES)
    return pytester


def test_the_fixtures_a_test_requests_mark_it_slow(probes):
    result = probes.runpytest_inprocess("-m", "slow", "--collect-only", "-q", "-p", "no:cacheprovider")
    selected = sorted(line.split("::")[1] for line in result.outlines if "::" in line)
    assert selected == ["test_slow_through_a_module_fixture", "test_spawns_through_the_fixture"]


def test_a_fast_test_that_trains_or_starts_a_process_fails_with_the_fixture_to_request(probes):
    result = probes.runpytest_inprocess("-m", "not slow", "-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=2, failed=3, deselected=2)
    text = result.stdout.str()
    assert "this test spawns a subprocess, but it is not marked slow" in text and "`run_child` fixture" in text
    assert "this test trains a model (benchmark.models.train._fit)" in text and "`trains` fixture" in text
    assert "this test starts a process (multiprocessing)" in text and "`spawn_context` fixture" in text
