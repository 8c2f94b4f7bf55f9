"""Bad options fail fast with a clear message, exit status 4, and nothing built or written; an INCONCLUSIVE cell's test
passes and shows as "inconclusive"."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]


def _pytest(run_child, tmp_path: Path, *args: str, collect_only: bool = True) -> subprocess.CompletedProcess:
    return run_child.pytest("suites/test_randomisation.py", "-q", "--bench-cache-dir", tmp_path / "cache",
                            "--bench-reports-dir", tmp_path / "reports", *(["--collect-only"] if collect_only else []),
                            *args, unset=["SHORTCUT_BENCH_PROFILE"], timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bench-profile", "quik"], "Unknown profile 'quik'; choose one of ['paper', 'quick', 'standard']. Did you mean 'quick'?"),
        (["--bench-threshold", "AUC=1.5"], "Threshold 1.5 for AUC is invalid: give a finite number in [0.0, 1.0]"),
        (["--bench-threshold", "AUCC=0.5"], "unknown metric 'AUCC'"),
        (["--bench-threshold", "AUC"], "'AUC' is not METRIC=VALUE"),
        (["--bench-threshold", "MPRT=nan"], "Threshold nan for MPRT is invalid"),
        (["--bench-threshold", "AUC=high"], "threshold for AUC must be a number, got 'high'"),
        (["--bench-methods", "Saliency,IntegratedGradient"], "Did you mean 'IntegratedGradients'?"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, args, message, record_bad_input, run_child):
    proc = _pytest(run_child, tmp_path, *args)
    record_bad_input(" ".join(args), proc.returncode == 4 and message in proc.stderr and not (tmp_path / "cache").exists()
                     and not (tmp_path / "reports").exists())
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "reports").exists()


def test_bad_data_folder_names_the_problem(tmp_path, record_bad_input, run_child):
    proc = _pytest(run_child, tmp_path, "--bench-data", "kaggle", "--bench-data-root", str(tmp_path / "missing"),
                   collect_only=False)
    out = proc.stdout + proc.stderr
    record_bad_input("data folder: missing", proc.returncode != 0 and str(tmp_path / "missing") in out
                     and not (tmp_path / "reports").exists())
    assert proc.returncode != 0
    assert "shortcut-bench could not prepare its data/models" in out and str(tmp_path / "missing") in out
    assert not (tmp_path / "reports").exists()


def test_threshold_override_reaches_the_verdict(tmp_path):
    from benchmark.running.configure import parse_thresholds

    assert parse_thresholds(["AUC=0.8", "MPRT=0.3"]) == {"watermark_localisation": {"AUC": 0.8},
                                                           "randomisation": {"MPRT": 0.3}}


# --- INCONCLUSIVE in pytest: a passing test with its own status, never a failure -------------------------------

# Three cells judged on synthetic scores: one passes, one straddles the pass level, one lies wholly below it. The
# second test carries a baseline's strict xfail, as compare mode marks what the baseline recorded as failing.
GRADED = '''
import numpy as np
import pytest

from benchmark.grading.properties import LOCALISATION
from benchmark.grading.verdict import Anchors, assert_cell, judge

RMA = LOCALISATION.metric("RelevanceMassAccuracy")


def _s(mean, sd=0.02, seed=0, n=32):
    return np.random.default_rng(seed).normal(mean, sd, n)


ANCHORS = Anchors("Random", "Oracle", _s(0.1, seed=11), _s(1.0, sd=0.001, seed=12))
CASES = {"Decided": (_s(0.8), "PASS"), "Undecided": (_s(0.55, sd=0.3, seed=3), "INCONCLUSIVE"),
         "Missing": (_s(0.2), "FAIL")}


def _grade(method, suffix=""):
    scores, expected = CASES[method]
    cell = judge(LOCALISATION, RMA, method + suffix, scores, {"Random": _s(0.1, seed=11)}, ANCHORS)
    assert cell.outcome == expected, cell.message
    return cell


@pytest.mark.parametrize("method", sorted(CASES))
def test_cell(method, record_cell):
    cell = _grade(method)
    record_cell(cell)
    assert_cell(cell)


@pytest.mark.xfail(strict=True, reason="baseline FAIL")
@pytest.mark.parametrize("method", sorted(CASES))
def test_cell_the_baseline_failed(method, record_cell):
    cell = _grade(method, "-again")
    record_cell(cell)
    assert_cell(cell)
'''


@pytest.fixture
def graded(pytester):
    pytester.makeconftest((ROOT / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_graded=GRADED)
    return pytester


SELECT = "Undecided or Decided and not baseline"  # the passing cell and both inconclusive ones


def _counts(outcomes: dict) -> dict:
    return {k: v for k, v in outcomes.items() if k in ("passed", "failed", "inconclusive", "xfailed", "xpassed")}


def test_an_inconclusive_cell_passes_its_test_and_is_counted_as_inconclusive(graded):
    reports = graded.path / "reports"
    result = graded.runpytest_inprocess("-p", "no:cacheprovider", "-v", "--bench-reports-dir", str(reports))
    out = result.stdout.str()
    # Undecided: a pass shown as INCONCLUSIVE, under the baseline's strict xfail too; Decided under that xfail is a
    # strict XPASS (an improvement), Missing an expected failure.
    assert _counts(result.parseoutcomes()) == {"passed": 1, "failed": 2, "inconclusive": 2, "xfailed": 1}, out
    assert "test_cell[Undecided] INCONCLUSIVE" in out and "test_cell_the_baseline_failed[Undecided] INCONCLUSIVE" in out
    assert "[XPASS(strict)] baseline FAIL" in out and "test_cell[Missing] FAILED" in out
    assert "property verdict(s) INCONCLUSIVE" in out
    board = json.loads((reports / "leaderboard.json").read_text())
    assert {c["method"]: c["outcome"] for c in board["cells"]}["Undecided"] == "INCONCLUSIVE"
    assert board["verdicts"]["watermark_localisation"]["Undecided"] == "INCONCLUSIVE"
    # Without the failing cells the run succeeds: INCONCLUSIVE never fails it.
    result = graded.runpytest_inprocess("-p", "no:cacheprovider", "-k", SELECT,
                                        "--bench-reports-dir", str(reports))
    assert result.ret == 0 and _counts(result.parseoutcomes()) == {"passed": 1, "inconclusive": 2}, result.stdout.str()
    assert "?" in result.stdout.str()


def test_inconclusive_shows_on_the_xdist_controller(graded, run_child):
    proc = run_child.pytest("-n", "2", "-k", SELECT, "--bench-reports-dir",
                            graded.path / "reports", cwd=graded.path, env={"PYTHONPATH": str(ROOT)}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert "1 passed" in last and "2 inconclusive" in last and "failed" not in last, proc.stdout[-3000:]


def test_a_strict_xpass_of_an_inconclusive_cell_is_a_pass_that_compare_mode_does_not_count_as_failed():
    import numpy as np

    from benchmark.grading.properties import LOCALISATION
    from benchmark.grading.verdict import INCONCLUSIVE, PASS, USER_PROPERTY, Anchors, judge
    from benchmark.regression.baseline import cell_key
    from benchmark.running.compare_mode import CELL_KEY, Outcomes
    from benchmark.running.teststatus import INCONCLUSIVE_STATUS, settle_strict_xpass, teststatus

    rng = np.random.default_rng(0)
    anchors = Anchors("Random", "Oracle", rng.normal(0.1, 0.02, 32), rng.normal(1.0, 0.001, 32))
    rma = LOCALISATION.metric("RelevanceMassAccuracy")

    def report(scores):
        cell = judge(LOCALISATION, rma, "M", scores, {}, anchors)
        key = cell_key(cell.suite, cell.metric, cell.method)
        # What pytest's skipping plugin makes of a passing test under compare mode's xfail(strict=True).
        return cell, pytest.TestReport(f"suites/x.py::test_cell[{cell.outcome}]", ("x.py", 1, "t"), {}, "failed",
                                       "[XPASS(strict)] baseline FAIL", "call",
                                       user_properties=[(CELL_KEY, key), (USER_PROPERTY, cell.to_json())])

    undecided, rep = report(rng.normal(0.55, 0.3, 32))
    assert undecided.outcome == INCONCLUSIVE
    settle_strict_xpass(rep)
    assert rep.passed and rep.longrepr is None and teststatus(rep) == INCONCLUSIVE_STATUS
    outcomes = Outcomes()
    outcomes.observe(rep)
    assert not outcomes.failed and outcomes.unexplained([undecided]) == []
    # A real improvement stays a strict XPASS: compare mode reports it as such.
    passed, rep = report(rng.normal(0.9, 0.02, 32))
    assert passed.outcome == PASS
    settle_strict_xpass(rep)
    assert rep.failed and teststatus(rep) is None


def test_a_suites_run_freezes_its_heap_at_exit_and_a_tests_run_does_not(pytester, monkeypatch):
    import atexit
    import gc

    registered = []
    monkeypatch.setattr(atexit, "register", lambda func, *args, **kwargs: registered.append(func) or func)
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    pytester.runpytest_inprocess("--collect-only", "-q", "-p", "no:cacheprovider")
    assert gc.freeze not in registered
    pytester.makeconftest("SHORTCUT_BENCH_SUITES = True\n")
    pytester.runpytest_inprocess("--collect-only", "-q", "-p", "no:cacheprovider")
    assert gc.freeze in registered
