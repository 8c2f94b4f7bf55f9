"""The shortcut-strength sweep: levels, exclusion of levels the model did not learn, detection limits, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark.errors import ConfigError
from benchmark.grading.properties import LOCALISATION
from benchmark.grading.verdict import ERROR, FAIL, INCONCLUSIVE, PASS, Cell, standard
from benchmark.options import BenchOptions, MarkLevel
from benchmark.reporting.sweep_report import write_sweep
from benchmark.running.sweep import (
    LevelOutcome,
    check_levels,
    detection_limit,
    grade_level,
    levels_for,
    parse_levels,
    prepare_level,
    summarise,
)

STRONG, FAINT = MarkLevel(0.04), MarkLevel(0.04, opacity=0.02)


def _cells(method: str, outcome: str) -> list[Cell]:
    # One deciding cell per localisation metric, all with the same outcome (and a p-value that survives BH).
    return [Cell(suite=LOCALISATION.key, suite_version=LOCALISATION.version, property=LOCALISATION.name,
                 metric=m.name, method=method, direction=m.direction, threshold=None, outcome=outcome,
                 message=outcome, standard=standard(LOCALISATION, m), informative=True,
                 score={"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 8}, scores=[0.5] * 8,
                 skill={"mean": 0.8, "ci_low": 0.7, "ci_high": 0.9, "n": 8}, skills=[0.8] * 8,
                 p_value=1e-4 if outcome == PASS else 0.9) for m in LOCALISATION.metrics]


def _level(area: float, flip: float, verdicts: dict[str, str]) -> LevelOutcome:
    return LevelOutcome(MarkLevel(area), area, {"flip_rate": flip},
                        [c for m, v in verdicts.items() for c in _cells(m, v)])


def test_the_detection_limit_is_the_weakest_level_from_which_every_stronger_included_level_passes():
    outcomes = [
        _level(0.005, 0.30, {"A": FAIL, "B": FAIL, "C": PASS}),  # not learned: excluded, whatever it says
        _level(0.01, 0.90, {"A": FAIL, "B": PASS, "C": FAIL}),
        _level(0.02, 0.95, {"A": PASS, "B": PASS, "C": PASS}),
        _level(0.04, 0.97, {"A": PASS, "B": PASS, "C": PASS}),
    ]
    assert detection_limit(outcomes, "A") == MarkLevel(0.02)
    assert detection_limit(outcomes, "B") == MarkLevel(0.01)
    # C's pass at the excluded level does not count, and its fail at 1% stops it there.
    assert detection_limit(outcomes, "C") == MarkLevel(0.02)
    outcomes[-1] = _level(0.04, 0.97, {"A": FAIL, "B": PASS, "C": PASS})
    assert detection_limit(outcomes, "A") is None  # a pass below a fail is no limit
    result = summarise(outcomes)
    assert [lv["learned"] for lv in result["levels"]] == [False, True, True, True]
    assert "did not learn the shortcut" in result["levels"][0]["excluded"]
    assert "0.5%" not in result["methods"]["A"] and result["detection_limits"] == {"A": None, "B": "1%", "C": "2%"}


def test_a_detection_limit_passes_over_inconclusive_stronger_levels_and_stops_at_a_fail():
    # Weak to strong. A: PASS, PASS, INCONCLUSIVE (no evidence of a miss at 4%): the first PASS. B: PASS, FAIL, PASS:
    # the fail makes the weak pass an accident, so the strongest. C: INCONCLUSIVE, PASS, INCONCLUSIVE: the PASS.
    # D: never PASSes. E: ERROR at the strongest level stops it like a FAIL (a crash is never a silent pass).
    outcomes = [
        _level(0.01, 0.90, {"A": PASS, "B": PASS, "C": INCONCLUSIVE, "D": INCONCLUSIVE, "E": PASS}),
        _level(0.02, 0.95, {"A": PASS, "B": FAIL, "C": PASS, "D": INCONCLUSIVE, "E": PASS}),
        _level(0.04, 0.97, {"A": INCONCLUSIVE, "B": PASS, "C": INCONCLUSIVE, "D": INCONCLUSIVE, "E": ERROR}),
    ]
    assert [lv.verdicts() for lv in outcomes][2] == {"A": INCONCLUSIVE, "B": PASS, "C": INCONCLUSIVE,
                                                     "D": INCONCLUSIVE, "E": ERROR}
    result = summarise(outcomes)
    assert result["detection_limits"] == {"A": "1%", "B": "4%", "C": "2%", "D": None, "E": None}
    assert "INCONCLUSIVE stronger level does not stop it" in result["rule"]
    assert result["methods"]["A"]["4%"]["verdict"] == INCONCLUSIVE
    from benchmark.reporting.sweep_report import READING, render_markdown

    md = render_markdown(result)
    assert READING in md and "INCONCLUSIVE" in md


def test_a_limit_that_inconclusive_levels_could_move_is_shown_undecided_with_its_range():
    # Weak to strong, with every INCONCLUSIVE read as PASS and then as FAIL. A: PASS, PASS, INCONCLUSIVE: 1% or, if
    # 4% fails, none. B: PASS, FAIL, PASS: decided whatever is read (4%). C: INCONCLUSIVE, PASS, PASS: 1% to 2%.
    # D: only INCONCLUSIVE: 1% to none. E: FAIL at the strongest level: none, decided.
    outcomes = [
        _level(0.01, 0.90, {"A": PASS, "B": PASS, "C": INCONCLUSIVE, "D": INCONCLUSIVE, "E": PASS}),
        _level(0.02, 0.95, {"A": PASS, "B": FAIL, "C": PASS, "D": INCONCLUSIVE, "E": PASS}),
        _level(0.04, 0.97, {"A": INCONCLUSIVE, "B": PASS, "C": PASS, "D": INCONCLUSIVE, "E": FAIL}),
    ]
    result = summarise(outcomes)
    assert result["detection_limits"] == {"A": "1%", "B": "4%", "C": "2%", "D": None, "E": None}
    assert result["detection_limit_ranges"] == {"A": ["1%", None], "B": ["4%", "4%"], "C": ["1%", "2%"],
                                                "D": ["1%", None], "E": [None, None]}
    from benchmark.reporting.sweep_report import limit_text, render_markdown

    ranges = result["detection_limit_ranges"]
    limits = result["detection_limits"]
    assert limit_text(limits, "A", ranges) == "1% (undecided: 1% to none)"
    assert limit_text(limits, "D", ranges) == "none (undecided: 1% to none)"
    assert limit_text(limits, "B", ranges) == "4%" and limit_text(limits, "E", ranges) == "none"
    assert limit_text(limits, "X", ranges) == "—" and limit_text(limits, "C") == "2%"  # not swept; no ranges (old)
    assert "| C        | 2% (undecided: 1% to 2%)" in render_markdown(result)


def test_a_level_with_too_few_confident_flips_is_excluded_with_the_reason():
    o = _level(0.02, 0.9, {"A": PASS})
    o.too_few = "The biased model flipped only 3 test cats to 'dog' with p(dog) >= 0.9 (need 5)"
    result = summarise([o, _level(0.04, 0.97, {"A": PASS})])
    assert not result["levels"][0]["learned"] and result["levels"][0]["excluded"].startswith("The biased model")
    assert result["detection_limits"] == {"A": "4%"}


def test_levels_parse_with_clear_errors_and_fit_the_profile_sizes():
    assert parse_levels("0.04, 0.01@0.5") == (MarkLevel(0.01, 0.5), MarkLevel(0.04))
    for bad, message in (("abc", "AREA"), ("1.5", "area must be in"), ("0.02@0", "opacity"), ("", "no sweep levels"),
                         ("0.02,0.02", "repeat")):
        with pytest.raises(ConfigError, match=message):
            parse_levels(bad)
    with pytest.raises(ConfigError, match="no mark covers at most 0.50% of a 32-px image"):
        MarkLevel(0.005).watermark(32)
    with pytest.raises(ConfigError, match="levels 1.5% and 2% draw the same 5×3 px mark at 32 px"):
        check_levels(parse_levels("0.015,0.02"), 32)
    check_levels(parse_levels("0.015,0.02"), 64)  # distinct at 64 px
    quick = levels_for("quick")
    assert len(quick) >= 4 and len({lv.watermark(32) for lv in quick}) == len(quick)
    assert quick[-1].watermark(32) == BenchOptions().data_spec(_quick()).watermark  # the strongest is the default


def _quick():
    from benchmark.profiles import PROFILES

    return PROFILES["quick"]


@pytest.fixture(scope="module")
def toy_sweep(quick_cache, tmp_path_factory):
    """A two-level sweep on the quick world: the default mark, and the same mark at 2% opacity (not learnable)."""
    options = BenchOptions(cache_root=quick_cache, device="cpu")
    outcomes = []
    for level in (FAINT, STRONG):
        outcome, grader = prepare_level(_quick(), options, level)
        if grader is not None:
            outcome.cells = grade_level(grader, ["Oracle", "Random"])
        outcomes.append(outcome)
    out = tmp_path_factory.mktemp("sweep")
    return summarise(outcomes), write_sweep(summarise(outcomes), out)


def test_a_toy_sweep_excludes_the_level_the_model_did_not_learn_and_limits_from_the_passing_ones(toy_sweep):
    result, paths = toy_sweep
    faint, strong = result["levels"]
    assert faint["label"] == "4% @ 0.02 opacity" and not faint["learned"] and faint["flip_rate"] < 0.5
    assert strong["learned"] and strong["flip_rate"] >= 0.8
    # Graded only where the model learned; Oracle (the mask itself) passes there, Random never does.
    assert set(result["methods"]["Oracle"]) == {"4%"} and result["methods"]["Oracle"]["4%"]["verdict"] == PASS
    assert result["detection_limits"] == {"Oracle": "4%", "Random": None}
    assert [p.name for p in paths] == ["sweep.json", "sweep.md", "sweep.png"]
    assert json.loads(paths[0].read_text())["detection_limits"]["Oracle"] == "4%"
    md = paths[1].read_text()
    assert "EXCLUDED" in md and "detection limit" in md
    from PIL import Image

    assert np.asarray(Image.open(paths[2])).shape[-1] in (3, 4)


def test_pytest_runs_the_sweep_only_when_asked(quick_cache, toy_sweep, tmp_path, run_child):
    # Default: the sweep's tests are deselected, so `pytest suites/` stays the single-world grid.
    collected = run_child.pytest("suites/test_strength_sweep.py", "--collect-only", "-q", "--bench-cache-dir",
                                 quick_cache, timeout=600)
    assert "deselected" in collected.stdout and "test_localises" not in collected.stdout.split("deselected")[0]
    # -m sweep with two levels (both cached by toy_sweep): the faint one is excluded, reports are written.
    run = run_child.pytest("suites/", "-m", "sweep", "-q", "--bench-cache-dir", quick_cache, "--bench-reports-dir",
                           tmp_path, "--bench-methods", "Oracle,Random", "--bench-sweep-levels", "0.04,0.04@0.02",
                           timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-3000:]  # Random fails localisation: a real verdict, not a crash
    assert "Traceback" not in out and "excluded" in out
    assert "Oracle: 4%" in out and "Random: none" in out
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert result["detection_limits"] == {"Oracle": "4%", "Random": None}
    assert not (tmp_path / "leaderboard.md").exists()  # no grid ran, so no grid report


def test_the_sweep_refuses_compare_mode_before_anything_is_built(tmp_path, run_child):
    # Compare mode grades pinned weights and trains nothing; no baseline pins a level's models.
    run = run_child.pytest("suites/", "-m", "sweep", "-q", "--bench-compare", "reports/baseline.json",
                           "--bench-cache-dir", tmp_path, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 4 and "cannot run with --bench-compare" in out and "Traceback" not in out, out[-2000:]
    assert not (tmp_path / "models").exists() and not (tmp_path / "datasets").exists()


def test_an_interrupted_sweep_writes_no_detection_limits(tmp_path):
    # Limits from the levels that happened to finish would be wrong, not partial: nothing is written.
    from types import SimpleNamespace

    from benchmark.running.collector import CellCollector
    from benchmark.running.run_context import RUN_KEY, RunContext

    def collector(out):
        ctx = RunContext(profile=_quick(), profile_reason="", options=BenchOptions(), compare=SimpleNamespace(checks={}))
        config = SimpleNamespace(stash={RUN_KEY: ctx}, rootpath=out, option=SimpleNamespace(numprocesses=0),
                                 getoption=lambda name: str(out) if name == "--bench-reports-dir" else None)
        c = CellCollector(config)
        c.sweep = {"t1": _level(0.04, 0.97, {"A": PASS})}
        return c

    stopped = collector(tmp_path / "stopped")
    stopped.pytest_sessionfinish(None, pytest.ExitCode.INTERRUPTED)
    assert not (tmp_path / "stopped" / "sweep.json").exists() and "interrupted" in stopped.written_note
    finished = collector(tmp_path / "done")
    finished.pytest_sessionfinish(None, pytest.ExitCode.TESTS_FAILED)
    assert json.loads((tmp_path / "done" / "sweep.json").read_text())["detection_limits"] == {"A": "4%"}


def test_the_readmes_reading_of_a_detection_limit_is_the_rule_the_sweep_applies():
    from pathlib import Path

    from benchmark.reporting.sweep_report import limit_text

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    paragraph = next(p for p in readme.split("\n\n") if p.startswith("**Detection limits**"))
    # The README's example range, at the quick sweep's levels: INCONCLUSIVE, PASS, INCONCLUSIVE from weak to strong.
    # Its other claims: a FAIL stops the limit (PASS, FAIL, PASS gives the strongest level), an INCONCLUSIVE does not.
    outcomes = [
        _level(0.015, 0.85, {"M": INCONCLUSIVE, "N": PASS, "P": PASS}),
        _level(0.025, 0.89, {"M": PASS, "N": FAIL, "P": PASS}),
        _level(0.04, 0.97, {"M": INCONCLUSIVE, "N": PASS, "P": INCONCLUSIVE}),
    ]
    result = summarise(outcomes)
    limits, ranges = result["detection_limits"], result["detection_limit_ranges"]
    example = limit_text(limits, "M", ranges)
    assert example == "2.5% (undecided: 1.5% to none)" and f'"{example}"' in " ".join(paragraph.split())
    assert "PASS, FAIL, PASS" in paragraph and limits["N"] == "4%"
    assert "INCONCLUSIVE stronger size does not stop the limit" in " ".join(paragraph.split()) and limits["P"] == "1.5%"
