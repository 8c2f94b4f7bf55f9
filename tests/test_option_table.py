"""pytest's --bench-NAME options and python -m benchmark grade's --NAME options come from one table: same defaults,
types and choices, and help that names each context's own spelling."""

from __future__ import annotations

import argparse

import pytest

from benchmark import __main__ as cli
from benchmark.option_table import SHARED, option_kwargs


def _grade_parser() -> argparse.ArgumentParser:
    sub = cli._parser()._subparsers._group_actions[0]
    return sub.choices["grade"]


@pytest.mark.parametrize("name", sorted(SHARED))
def test_every_shared_option_is_declared_alike_to_pytest_and_to_grade(name, pytestconfig):
    # This session loaded the plugin, so pytest knows every --bench- option; tests pass none, so each holds its default.
    grade = {a.option_strings[0]: a for a in _grade_parser()._actions}[f"--{name}"]
    assert pytestconfig.getoption(f"--bench-{name}") == grade.default
    assert grade.choices == SHARED[name].get("choices")
    assert "{root}" not in grade.help


def test_help_names_each_contexts_spelling_and_folder():
    assert option_kwargs("data-root", pytest=True)["help"].endswith("--bench-data")
    assert option_kwargs("data-root", pytest=False)["help"].endswith("--data")
    assert "else rootdir" in option_kwargs("cache-dir", pytest=True)["help"]
    assert "else the current folder" in option_kwargs("cache-dir", pytest=False)["help"]


def test_grade_reads_the_environment_defaults_its_help_names():
    # --fresh defaults to None, not False, so $SHORTCUT_BENCH_FRESH decides when the flag is absent, as for pytest.
    args = cli._parser().parse_args(["grade"])
    assert args.fresh is None and args.profile is None
    assert "$SHORTCUT_BENCH_FRESH=1" in _grade_parser().format_help().replace("\n", " ").replace("  ", " ")
