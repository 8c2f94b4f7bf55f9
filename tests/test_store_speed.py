"""benchmarks/store_speed.py's --same-grid (issue 28's cold target on the older commit's own grid): it grades here
exactly the older commit's tests on one training seed, and refuses what it cannot compare."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "store_speed.py"


def test_same_grid_grades_the_older_commits_tests_on_one_training_seed(script, monkeypatch, tmp_path):
    here = ["suites/test_a.py::T::test_cell[M-X]", "suites/test_a.py::T::test_cell[M-Y]", "suites/test_b.py::T::c[N]"]
    monkeypatch.setattr(script, "_collected", lambda root, cache, env: here)
    assert script._same_grid(here[:2], tmp_path, {}) == [*here[:2], "--bench-model-seeds", "1"]
    with pytest.raises(SystemExit, match=r"1 of the older commit's tests do not exist here, e\.g\. suites/gone"):
        script._same_grid([here[0], "suites/gone.py::T::test_cell[M-X]"], tmp_path, {})


def test_same_grid_needs_the_older_commit(script, capsys):
    with pytest.raises(SystemExit) as exc:
        script.main(["--same-grid", "--skip-ref"])
    assert exc.value.code == 2 and "--same-grid grades the older commit's tests" in capsys.readouterr().err
