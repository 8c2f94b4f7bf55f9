"""benchmarks/worker_time.py: the clock plugin's readings of a real pytest run, and what the script makes of them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "worker_time.py"


def _clock_file(path: Path, start: float, tests: list[tuple[str, float, float]], end: float) -> None:
    events = [{"event": "configure", "t": start}]
    for nodeid, begin, stop in tests:
        events += [{"event": "begin", "id": nodeid, "t": begin}, {"event": "end", "id": nodeid, "t": stop}]
    events.append({"event": "unconfigure", "t": end})
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")


def test_the_plugin_stamps_every_test_of_a_real_session(script, run_child, tmp_path):
    (tmp_path / "test_two.py").write_text("import time\n\ndef test_a():\n    time.sleep(0.2)\n\n"
                                          "def test_b():\n    pass\n", encoding="utf-8")
    clock = tmp_path / "clock"
    clock.mkdir()
    path = os.pathsep.join(filter(None, [str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH")]))
    proc = run_child.python("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "_clock_plugin", "-p",
                            "no:shortcut_bench", "test_two.py", cwd=tmp_path, timeout=120,
                            env={"SHORTCUT_BENCH_CLOCK": str(clock), "PYTHONPATH": path})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from_file = script.read_clock(clock / "controller.jsonl")
    assert [t[0] for t in from_file.tests] == ["test_two.py::test_a", "test_two.py::test_b"]
    assert from_file.tests[0][2] - from_file.tests[0][1] >= 0.2
    assert from_file.start <= from_file.tests[0][1] and from_file.tests[-1][2] <= from_file.end
    # Under xdist each worker writes its own clock, which grading_clocks reads instead of the controller's copies.
    workers = tmp_path / "workers"
    workers.mkdir()
    proc = run_child.python("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "_clock_plugin", "-p",
                            "no:shortcut_bench", "-n", "2", "test_two.py", cwd=tmp_path, timeout=120,
                            env={"SHORTCUT_BENCH_CLOCK": str(workers), "PYTHONPATH": path})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    clocks = script.grading_clocks(workers)
    assert sorted(clocks) == ["gw0", "gw1"] and sum(len(c.tests) for c in clocks.values()) == 2


def test_workers_busy_idle_and_the_runs_fixed_cost(script, tmp_path):
    _clock_file(tmp_path / "controller.jsonl", 100.0, [("suites/a.py::T::x[M]", 104.0, 200.0)], 210.0)
    _clock_file(tmp_path / "gw0.jsonl", 101.0, [("suites/a.py::T::x[M]", 104.0, 110.0),
                                                ("suites/b.py::T::y[M]", 111.0, 150.0)], 151.0)
    _clock_file(tmp_path / "gw1.jsonl", 101.0, [("suites/b.py::T::y[N]", 105.0, 146.0)], 147.0)
    clocks = script.grading_clocks(tmp_path)
    assert sorted(clocks) == ["gw0", "gw1"]  # the controller's copies of the workers' tests do not count
    assert clocks["gw0"].busy == pytest.approx(45.0) and clocks["gw0"].idle == pytest.approx(1.0)
    s = script.run_summary(clocks, launched=99.0, exited=155.0)
    assert s == pytest.approx({"wall": 56.0, "work": 86.0, "idle": 1.0, "before": 5.0, "after": 5.0, "tail": 4.0})
    assert script.by_file(clocks) == pytest.approx({"suites/a.py": 6.0, "suites/b.py": 80.0})


def test_one_process_is_graded_from_the_controllers_clock(script, tmp_path):
    _clock_file(tmp_path / "controller.jsonl", 10.0, [("suites/a.py::T::x[M]", 12.0, 20.0)], 21.0)
    clocks = script.grading_clocks(tmp_path)
    assert list(clocks) == ["controller"] and clocks["controller"].busy == pytest.approx(8.0)


def test_one_worker_is_refused(script, capsys):
    with pytest.raises(SystemExit) as exc:
        script.main(["--workers", "1"])
    assert exc.value.code == 2 and "--workers must be 2 or more" in capsys.readouterr().err


def test_an_unknown_commit_is_refused_before_any_model_is_built(script, model_builds):
    with pytest.raises(SystemExit, match=r"--ref no-such-commit-5eed: git knows no such commit"):
        script.main(["--ref", "no-such-commit-5eed"])
    assert model_builds == []
