"""Retrain reproducibility (issue 31, item 4): the comparison of two runs' leaderboards
(benchmark/regression/retrain.py) on hand-made leaderboards, the script's bad inputs, and one retrain end to end on
a small method subset (benchmarks/retrain_repro.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmark.grading.properties import PROPERTIES
from benchmark.regression.retrain import (
    FLIP,
    ONE_RUN_ONLY,
    OTHER_MOVE,
    UNDECIDED_MOVE,
    LeaderboardError,
    compare,
    kind_of,
    load_leaderboard,
    render_markdown,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "retrain_repro.py"


def _cell(metric: str, method: str, outcome: str, mean: float | None = 0.5, skill: float | None = 0.6,
          suite: str = "watermark_localisation") -> dict:
    scored = mean is not None
    return {"suite": suite, "metric": metric, "method": method, "outcome": outcome, "direction": "↑",
            "mean": mean, "ci_low": mean - 0.01 if scored else None, "ci_high": mean + 0.01 if scored else None,
            "threshold": 0.513 if scored else None, "skill": skill,
            "skill_low": skill - 0.05 if skill is not None else None,
            "skill_high": skill + 0.05 if skill is not None else None,
            "standard": "skill >= 0.5 (Random = 0, Oracle = 1)", "beats": "Random;Sobel" if scored else ""}


def _board(verdicts: dict[str, str], cells: list[dict]) -> dict:
    return {"profile": "quick", "seed": 0, "overall": [], "verdicts": {"watermark_localisation": verdicts},
            "cells": cells}


def _pair(**b_outcomes) -> tuple[dict, dict]:
    """Run A: Saliency and GradCAM pass RelevanceRankAccuracy and AUC; run B: the outcomes given as METHOD_METRIC."""
    methods, metrics = ("Saliency", "GradCAM"), ("RelevanceRankAccuracy", "AUC")
    a_cells = [_cell(metric, m, "PASS", 0.525) for m in methods for metric in metrics]
    b_cells = [_cell(metric, m, b_outcomes.get(f"{m}_{metric}", "PASS"), 0.522) for m in methods for metric in metrics]
    b_cells = [c for c in b_cells if c["outcome"] != "missing"]
    b_verdicts = {m: b_outcomes.get(m, "PASS") for m in methods}
    return _board(dict.fromkeys(methods, "PASS"), a_cells), _board(b_verdicts, b_cells)


def test_outcome_moves_are_classified_on_strings():
    assert kind_of("PASS", "PASS") is None
    assert kind_of("PASS", "FAIL") == kind_of("FAIL", "PASS") == FLIP
    assert kind_of("PASS", "INCONCLUSIVE") == kind_of("INCONCLUSIVE", "FAIL") == UNDECIDED_MOVE
    for a, b in [("PASS", "ERROR"), ("N/A", "FAIL"), ("INFO", "UNDECIDED"), ("FAIL", "COLLAPSED"),
                 ("INCONCLUSIVE", "ERROR")]:
        assert kind_of(a, b) == OTHER_MOVE, (a, b)
    assert kind_of(None, "PASS") == kind_of("FAIL", None) == ONE_RUN_ONLY


def test_a_pass_to_fail_flip_counts_at_both_levels_with_both_runs_cis():
    a, b = _pair(GradCAM="FAIL", GradCAM_AUC="FAIL")
    result = compare(a, b)
    counts = result.counts()
    assert counts["properties"] == {"compared": 2, "unchanged": 1, FLIP: 1, UNDECIDED_MOVE: 0, OTHER_MOVE: 0,
                                    ONE_RUN_ONLY: 0}
    assert counts["cells"] == {"compared": 4, "unchanged": 3, FLIP: 1, UNDECIDED_MOVE: 0, OTHER_MOVE: 0,
                               ONE_RUN_ONLY: 0}
    flip, = result.properties.of(FLIP)
    assert (flip.suite, flip.method, flip.a, flip.b) == ("watermark_localisation", "GradCAM", "PASS", "FAIL")
    assert [label for label, _, _ in flip.evidence] == ["AUC ↑ (skill >= 0.5)", "RelevanceRankAccuracy ↑ (skill >= 0.5)"]
    text = render_markdown(result, ("A", "B"))
    # Both runs' score CIs, the pass level and the skill CIs: how close to the pass level the flip was.
    assert "0.525 [0.515, 0.535] pass at 0.513; skill 0.600 [0.550, 0.650]; beats Random, Sobel; PASS" in text
    assert "0.522 [0.512, 0.532] pass at 0.513; skill 0.600 [0.550, 0.650]; beats Random, Sobel; FAIL" in text
    assert "| PASS ↔ FAIL flips" in text and "1 (50.0%)" in text and "1 (25.0%)" in text


def test_pass_to_inconclusive_is_a_move_not_a_flip():
    a, b = _pair(Saliency="INCONCLUSIVE", Saliency_AUC="INCONCLUSIVE", GradCAM_AUC="ERROR")
    counts = compare(a, b).counts()
    assert counts["properties"][FLIP] == 0 and counts["properties"][UNDECIDED_MOVE] == 1
    assert counts["cells"][FLIP] == 0 and counts["cells"][UNDECIDED_MOVE] == 1 and counts["cells"][OTHER_MOVE] == 1
    assert "PASS or FAIL ↔ INCONCLUSIVE" in render_markdown(compare(a, b))


def test_a_missing_cell_is_reported_not_dropped():
    a, b = _pair(Saliency_AUC="missing")
    result = compare(a, b)
    assert result.cells.compared == 3 and result.cells.unchanged == 3
    gone, = result.cells.of(ONE_RUN_ONLY)
    assert (gone.metric, gone.method, gone.a, gone.b) == ("AUC", "Saliency", "PASS", None)
    text = render_markdown(result)
    assert "in one run only (not compared)" in text and "not graded" in text
    # Its verdict is still compared; the verdict lists the cell it lacks as not graded only when the verdict moved.
    assert result.properties.changes == []


def test_identical_runs_say_nothing_changed_and_json_is_plain():
    a, _ = _pair()
    result = compare(a, a)
    assert "No property verdict or cell outcome differs" in render_markdown(result)
    assert json.loads(json.dumps(result.as_dict()))["counts"]["cells"]["unchanged"] == 4


def test_unscored_cells_read_as_their_outcome():
    a, b = _pair(GradCAM_AUC="N/A")
    b["cells"] = [dict(c, mean=None, skill=None, ci_low=None, ci_high=None, threshold=None)
                  if c["outcome"] == "N/A" else c for c in b["cells"]]
    change, = compare(a, b).cells.of(OTHER_MOVE)
    assert change.evidence[0][2] == "N/A"


@pytest.mark.parametrize("damage, message", [
    ("missing", "no such leaderboard"),
    ("not-json", "not readable JSON"),
    ("no-verdicts", "not a shortcut-bench leaderboard"),
    ("cell-without-outcome", "not a shortcut-bench leaderboard"),
])
def test_a_bad_leaderboard_is_one_clear_line(tmp_path, damage, message, record_bad_input):
    path = tmp_path / "leaderboard.json"
    good, _ = _pair()
    if damage == "not-json":
        path.write_text("{ half", encoding="utf-8")
    elif damage == "no-verdicts":
        path.write_text(json.dumps({"cells": []}), encoding="utf-8")
    elif damage == "cell-without-outcome":
        good["cells"][0].pop("outcome")
        path.write_text(json.dumps(good), encoding="utf-8")
    with pytest.raises(LeaderboardError) as exc:
        load_leaderboard(tmp_path)
    text = str(exc.value)
    clear = message in text and str(path) in text and "\n" not in text
    record_bad_input(f"retrain leaderboard: {damage}", clear)
    assert clear, text


def test_the_script_compares_two_reports_folders(script, tmp_path, capsys):
    a, b = _pair(GradCAM="FAIL", GradCAM_AUC="FAIL")
    for name, board in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "leaderboard.json").write_text(json.dumps(board), encoding="utf-8")
    out = tmp_path / "cmp.json"
    rc = script.main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(out)])
    assert rc == 1  # a property verdict flipped: the target does not hold
    assert "**not met** (1 property verdict(s), 1 of 4 cells, 25.0%)" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["counts"]["properties"][FLIP] == 1 and record["targets_met"] is False


@pytest.mark.parametrize("args, message", [
    (["--compare", "{tmp}/nowhere", "{tmp}/nowhere"], "no such leaderboard"),
    (["--cache-a", "{tmp}"], "no trained models in"),
    (["--threads-b", "one"], "--threads-b takes thread counts >= 1"),
    (["--retrain", "biassed"], "--retrain takes arms among biased, control, absent"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--keep", "{tmp}/full"], "already holds files"),
    (["--json", "{tmp}/no/such/folder/out.json"], "its folder does not exist"),
])
def test_bad_script_input_exits_2_with_one_line(script, tmp_path, capsys, args, message, record_bad_input):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").touch()
    rc = script.main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err.strip()
    clear = rc == 2 and message in err and "\n" not in err and "Traceback" not in err
    record_bad_input(f"retrain script: {args[0]}", clear)
    assert clear, (rc, err)


BUILD_OUTPUT = """profile quick (default without a GPU)
procedural 32px seed 0: train 6000
biased: biased model SmallCNN-16: trained in 41.3s on cpu; clean acc 89.1%, flip rate 97.2%; shortcut targets met
{
  "flip_rate": 0.972,
  "weights_sha256": "aa"
}
control: control model SmallCNN-16: cache hit; clean acc 88.4%, flip rate 0.9%, mean p(dog) on flips 0.54
{"flip_rate": 0.009, "weights_sha256": "bb"}
"""


def test_model_cards_are_read_from_the_build_output(script):
    cards, how = script.parse_cards(BUILD_OUTPUT)
    assert cards == {"biased": {"flip_rate": 0.972, "weights_sha256": "aa"},
                     "control": {"flip_rate": 0.009, "weights_sha256": "bb"}}
    assert how == {"biased": "trained in 41.3s on cpu", "control": "cache hit"}


# One cheap method, and the biased model alone retrained (the arm every property grades; the control and absent arms
# stay A's files). Measured on 2 busy cores: about 4 minutes of CPU, most of it the training and the two grids (about
# a minute each, start-up and controls included; Saliency with GradCAM cost as much within the noise of a busy
# machine). Saliency has verdicts on the edge on the quick world (randomisation and localisation INCONCLUSIVE, a
# stability metric whose skill CI straddles the pass level): the ones a retrain could flip.
SUBSET = "Saliency"


def test_a_retrain_with_other_weights_flips_no_property_verdict(quick_cache, run_child, tmp_path):
    out = tmp_path / "retrain.json"
    proc = run_child.python(SCRIPT, "--cache-a", quick_cache, "--retrain", "biased", "--methods", SUBSET,
                            "--workers", "1", "--json", out, timeout=1800)
    text = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode in (0, 1) and out.is_file(), text
    record = json.loads(out.read_text())
    a, b = (record["builds"][x]["cards"] for x in "AB")
    # Every training seed's biased model is retrained (the profile's default seeds); no other arm is.
    arm_of = {name: name.split("-seed")[0] for name in a if not name.startswith("contract-")}
    assert all(a[n]["weights_sha256"] != b[n]["weights_sha256"] for n, arm in arm_of.items() if arm == "biased"), text
    assert all(a[n]["weights_sha256"] == b[n]["weights_sha256"] for n, arm in arm_of.items() if arm != "biased")
    counts = record["counts"]
    n_methods = len(SUBSET.split(","))
    assert counts["properties"]["compared"] == n_methods * len(PROPERTIES), text
    assert counts["properties"][ONE_RUN_ONLY] == counts["cells"][ONE_RUN_ONLY] == 0, text
    # Issue 31's target: a verdict whose CIs straddle the pass level is INCONCLUSIVE, so a retrain, which moves a cell
    # by far less than a decided verdict's margin, moves a verdict to or from INCONCLUSIVE at most, never across.
    assert counts["properties"][FLIP] == 0, text
    retrained = ", ".join(n for n, arm in arm_of.items() if arm == "biased")
    assert f"Weights (sha256) differ for {retrained}; control, absent" in proc.stdout, text


def test_a_retrain_covers_every_training_seeds_arms(script):
    cards = {name: {} for name in ("biased", "control", "absent", "biased-seed1", "control-seed1", "absent-seed1",
                                   "contract-resnet-biased", "contract-resnet-control")}
    # Build B retrains the named arms of every seed (the profile's default seeds), never the contract's models.
    assert script.seed_names(cards, ["biased"]) == ["biased", "biased-seed1"]
    assert len(script.seed_names(cards, ["biased", "control", "absent"])) == 6


def test_arch_and_model_seeds_go_to_both_builds_and_both_grids(script, monkeypatch, tmp_path):
    commands = []
    built = BUILD_OUTPUT + 'absent: absent model SmallViT: cache hit; clean acc 88.0%\n{"weights_sha256": "cc"}\n'

    def run(cmd, **kwargs):
        commands.append(cmd)
        if "pytest" in cmd:  # the grid: a leaderboard
            out = Path(cmd[cmd.index("--bench-reports-dir") + 1])
            out.mkdir(parents=True)
            (out / "leaderboard.json").write_text("{}")
        return subprocess.CompletedProcess(cmd, 0, stdout=built, stderr="")

    monkeypatch.setattr(script.subprocess, "run", run)
    args = script.parse_args(["--arch", "vit", "--model-seeds", "1"])
    b = script.Build("A", tmp_path / "cache")
    script.build(b, 2, tmp_path, script.build_options(args))
    script.grade(b, tmp_path / "reports", "Saliency", 2, tmp_path, script.grid_options(args))
    build_cmd, grid_cmd = commands
    assert build_cmd[-4:] == ["--arch", "vit", "--model-seeds", "1"]
    assert grid_cmd[-4:] == ["--bench-arch", "vit", "--bench-model-seeds", "1"]
    args.git = "abc"
    assert "models: vit; grids `pytest suites/ --bench-fresh --bench-arch vit --bench-model-seeds 1`" in \
        script.header(args, b, b)
    assert script.build_options(script.parse_args([])) == ()  # the profile's architecture and seeds: no option


def test_a_model_seed_count_below_one_is_refused(script):
    with pytest.raises(script.Refused, match="--model-seeds must be >= 1, got 0"):
        script.parse_args(["--model-seeds", "0"])
