"""Verdict stability over training seeds: per-seed and leave-one-seed-out outcomes, their property verdicts, and how
the reports carry them (synthetic scores, no models)."""

from __future__ import annotations

import json

import numpy as np

from benchmark.grading.properties import LOCALISATION
from benchmark.grading.seed_stability import property_stability, seed_outcomes
from benchmark.grading.verdict import FAIL, INCONCLUSIVE, PASS, Anchors, Cell, judge
from benchmark.reporting.report import build_record, cells_frame, render_markdown, stability_mark

RMA = LOCALISATION.metric("RelevanceMassAccuracy")
N = 32  # images per seed


def _s(mean, seed, n=N, sd=0.02):
    return np.random.default_rng(seed).normal(mean, sd, n)


def _world(means: list[float]):
    """(scores, controls, anchors, groups): one seed per mean of the method's scores; Random near 0.1, Oracle at 1."""
    k = len(means)
    scores = np.concatenate([_s(m, seed=i) for i, m in enumerate(means)])
    controls = {"Random": np.concatenate([_s(0.1, seed=10 + i) for i in range(k)])}
    anchors = Anchors("Random", "Oracle", controls["Random"],
                      np.concatenate([_s(1.0, seed=20 + i, sd=0.001) for i in range(k)]))
    return scores, controls, anchors, np.repeat(np.arange(k), N)


def _graded(means: list[float], method: str = "M") -> Cell:
    """A judged cell with its seed outcomes, as grade_cell makes it."""
    scores, controls, anchors, groups = _world(means)
    groups = groups if len(means) > 1 else None
    cell = judge(LOCALISATION, RMA, method, scores, controls, anchors, groups=groups)
    if groups is not None:
        cell.seed_outcomes, cell.loso_outcomes = seed_outcomes(LOCALISATION, RMA, method, scores, controls, anchors,
                                                               groups=groups)
    return cell


def test_one_disagreeing_seed_of_three_passes_two_alone_and_splits_the_leave_one_out_verdicts():
    # Seeds 0 and 1 localise, seed 2 does not. Pooled, the three seeds' means straddle the pass level.
    cell = _graded([0.8, 0.8, 0.2])
    assert cell.outcome == INCONCLUSIVE and cell.seed_counts == [N] * 3
    assert cell.seed_outcomes == [PASS, PASS, FAIL]
    # Leaving out seed 0 or 1 keeps the disagreement (t interval with 1 degree of freedom); leaving out seed 2 passes.
    assert cell.loso_outcomes == [INCONCLUSIVE, INCONCLUSIVE, PASS]
    assert property_stability([cell]) == {"seeds": 3, "seeds_pass": 2, "loso_agree": 2}
    record = build_record([cell], {"model_seeds": [0, 1, 2]})
    assert record["stability"] == {LOCALISATION.key: {"M": {"seeds": 3, "seeds_pass": 2, "loso_agree": 2}}}
    md = render_markdown(record, [cell])
    assert "seeds passing alone" in md and "LOSO agreement" in md and "| 2/3 " in md
    # An INCONCLUSIVE verdict rests on nothing: only a PASS or FAIL that some leave-one-out verdict drops is marked.
    assert "INCONCLUSIVE (rests on one seed)" not in md
    row = cells_frame([cell], record["stability"]).iloc[0]
    assert row["seed_outcomes"] == "PASS;PASS;FAIL" and (row["seeds_pass"], row["loso_agree"]) == (2, 2)


def test_seeds_that_agree_agree_everywhere_and_two_seeds_judge_each_seed_once():
    three = _graded([0.8, 0.8, 0.8])
    assert three.outcome == PASS and three.seed_outcomes == three.loso_outcomes == [PASS] * 3
    assert property_stability([three]) == {"seeds": 3, "seeds_pass": 3, "loso_agree": 3}
    # With two seeds, leaving one out is the other alone.
    two = _graded([0.8, 0.2])
    assert two.seed_outcomes == [PASS, FAIL] and two.loso_outcomes == [FAIL, PASS]
    record = build_record([three], {"model_seeds": [0, 1, 2]})
    assert "PASS (rests on one seed)" not in render_markdown(record, [three])
    # A PASS or FAIL that one leave-one-seed-out verdict does not repeat is marked; an INCONCLUSIVE one is not.
    split = {"seeds": 3, "seeds_pass": 2, "loso_agree": 2}
    assert stability_mark(PASS, split) == stability_mark(FAIL, split) == " (rests on one seed)"
    assert stability_mark(INCONCLUSIVE, split) == stability_mark(PASS, {**split, "loso_agree": 3}) == ""
    assert stability_mark(PASS, {"seeds": 1}) == " (one seed)"


def test_property_stability_applies_the_majority_rule_to_each_seeds_cells():
    # Two metrics: the property passes on a seed only when both its cells do (a strict majority of two).
    a, b = _graded([0.8, 0.8, 0.8]), _graded([0.8, 0.8, 0.2])
    b.metric = "RelevanceRankAccuracy"
    stab = property_stability([a, b])
    assert stab["seeds_pass"] == 2  # seed 2 has one pass of two: no majority
    # Full: PASS + INCONCLUSIVE of two may yet pass, so INCONCLUSIVE; leaving seed 2 out both pass.
    assert stab["loso_agree"] == 2


def test_one_seed_carries_empty_lists_and_the_record_says_one_seed():
    cell = _graded([0.8])
    assert cell.outcome == PASS and cell.seed_outcomes == [] and cell.loso_outcomes == []
    assert seed_outcomes(LOCALISATION, RMA, "M", *_world([0.8])[:3], groups=None) == ([], [])
    record = build_record([cell], {"seed": 0})
    assert record["stability"] == {LOCALISATION.key: {"M": {"seeds": 1}}}
    md = render_markdown(record, [cell])
    assert "PASS (one seed)" in md and "seeds passing alone" not in md


def test_a_cell_written_before_the_seed_outcomes_loads_and_reports_its_seeds_only():
    cell = _graded([0.8, 0.8, 0.2])
    old = json.loads(cell.to_json())
    del old["seed_outcomes"], old["loso_outcomes"]
    loaded = Cell.from_json(json.dumps(old))
    assert loaded.seed_outcomes == [] and loaded.loso_outcomes == [] and loaded.outcome == cell.outcome
    assert property_stability([loaded]) == {"seeds": 3}
    record = build_record([loaded], {"model_seeds": [0, 1, 2]})
    assert "| —" in render_markdown(record, [loaded])  # stability columns shown, not recorded


def test_the_outcomes_on_subsets_are_judges_outcomes():
    # seed_outcomes decides from the control differences and the pass level alone; judge, run on each subset, is
    # the reference (localisation: higher is better; noise stability's MaxSensitivity: lower is better).
    from benchmark.grading.properties import NOISE_STABILITY
    from benchmark.grading.seed_stability import seed_masks

    maxsens = NOISE_STABILITY.metric("MaxSensitivity")
    for prop, metric, means, flip in [(LOCALISATION, RMA, [0.8, 0.5, 0.2, 0.55], 1.0),
                                      (LOCALISATION, RMA, [0.3, 0.15, 0.52], 1.0),
                                      (NOISE_STABILITY, maxsens, [0.2, 0.9, 0.5, 0.75], -1.0)]:
        scores, controls, anchors, groups = _world(means)
        if flip < 0:  # lower is better: the Random anchor scores high, a stable map near 0
            anchors = Anchors("Random", "FixedPattern", 1.0 - anchors.neg, np.zeros(scores.size))
            controls = {"Random": anchors.neg}
        got = seed_outcomes(prop, metric, "M", scores, controls, anchors, groups=groups)
        want = tuple([judge(prop, metric, "M", scores[m], {k: c[m] for k, c in controls.items()},
                            Anchors(anchors.negative, anchors.positive, anchors.neg[m], anchors.pos[m]),
                            groups=groups[m]).outcome for m in masks] for masks in seed_masks(groups))
        assert got == want and len(set(got[0] + got[1])) > 1


def test_the_bootstrap_memo_gives_the_same_bytes_for_values_and_their_negation(monkeypatch):
    # Re-judging the seeds leans on stats' memo of bootstrap draws; with it off, every interval and p-value is equal.
    from benchmark.grading import stats

    v = np.random.default_rng(3).exponential(1.0, 40) - 0.7
    calls = [(f, x) for f in (stats.studentized_mean, stats.positive_p_value) for x in (v, -v, v - 0.2)]
    memo = [repr(f(x, seed=2)) for f, x in calls]
    monkeypatch.setattr(stats, "_bootstrap_t", stats._bootstrap_t_of)
    assert memo == [repr(f(x, seed=2)) for f, x in calls]
