"""Verdict rules, statistics and leaderboard rendering on synthetic scores (no models needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark.errors import ConfigError
from benchmark.grading.properties import FALSE_ALARM, LOCALISATION, NOISE_STABILITY, PROPERTIES
from benchmark.grading.stats import Interval
from benchmark.grading.verdict import (
    COLLAPSED,
    ERROR,
    FAIL,
    INCONCLUSIVE,
    INFO,
    NA,
    PASS,
    UNDECIDED,
    Anchors,
    Cell,
    anchor_validity,
    judge,
    property_verdict,
    skill_scores,
)
from benchmark.reporting.ranking import dominance_ranks, rank_labels, summarise
from benchmark.reporting.report import build_record, cells_frame, render_markdown, write_reports

RMA = LOCALISATION.metric("RelevanceMassAccuracy")
MAXSENS = NOISE_STABILITY.metric("MaxSensitivity")
rng = np.random.default_rng(0)


def _s(mean, n=32, sd=0.02, seed=0):
    return np.random.default_rng(seed).normal(mean, sd, n)


def _loc(neg=0.1, pos=1.0, n=32):
    # Localisation's anchors: the Random map near chance, the Oracle mask at the top.
    return Anchors("Random", "Oracle", _s(neg, n=n, seed=11), _s(pos, n=n, sd=0.001, seed=12))


def _stab(neg=1.5, n=32):
    # Stability's anchors: Random far from stable, FixedPattern exactly stable (sensitivity 0).
    return Anchors("Random", "FixedPattern", _s(neg, n=n, seed=13), np.zeros(n))


def test_pass_needs_the_pass_level_and_significant_win_over_every_control():
    good = judge(LOCALISATION, RMA, "M", _s(0.7), {"Random": _s(0.1, seed=11), "Sobel": _s(0.2, seed=2)}, _loc())
    assert good.outcome == PASS and good.comparisons["Sobel"]["beaten"]
    assert good.skill["mean"] == pytest.approx((0.7 - 0.1) / 0.9, abs=0.01)
    assert good.threshold == pytest.approx(0.1 + 0.5 * 0.9, abs=0.01) and good.informative
    # Meets the pass level but indistinguishable from Sobel: neither beats the other, so INCONCLUSIVE, and the
    # message names the undecided comparison and how to decide it.
    tie = judge(LOCALISATION, RMA, "M", _s(0.7, seed=3), {"Random": _s(0.1, seed=11), "Sobel": _s(0.7, seed=2)},
                _loc())
    assert tie.outcome == INCONCLUSIVE and "INCONCLUSIVE: neither beats nor is beaten by Sobel" in tie.message
    assert not tie.comparisons["Sobel"]["beaten"] and not tie.comparisons["Sobel"]["lost"]
    assert "--bench-model-seeds" in tie.message and "--bench-profile standard" in tie.message
    # Beats the controls but its skill CI lies wholly nearer the negative control than the positive one: FAIL.
    low = judge(LOCALISATION, RMA, "M", _s(0.3), {"Random": _s(0.1, seed=11)}, _loc())
    assert low.outcome == FAIL and low.skill["ci_high"] < 0.5
    assert "FAIL: skill CI [" in low.message and "lies wholly below the pass level 0.5" in low.message


def test_the_pass_level_moves_with_the_controls_of_the_run():
    # The same scores pass against weak controls and fail against strong ones: the standard is relative.
    scores = _s(0.5)
    assert judge(LOCALISATION, RMA, "M", scores, {}, _loc(neg=0.1, pos=0.6)).outcome == PASS
    assert judge(LOCALISATION, RMA, "M", scores, {}, _loc(neg=0.1, pos=1.0)).outcome == FAIL


def test_a_fixed_threshold_overrides_the_pass_level():
    fixed = LOCALISATION.with_thresholds({"RelevanceMassAccuracy": 0.2}).metric("RelevanceMassAccuracy")
    cell = judge(LOCALISATION, fixed, "M", _s(0.3), {"Random": _s(0.1, seed=11)}, _loc())
    assert cell.outcome == PASS and cell.threshold == 0.2 and cell.standard == "fixed threshold 0.2"
    assert cell.skill is not None  # still reported, and still ranks the method


def test_false_alarm_control_is_a_comparison_like_any_other():
    # As high on the control model as on the biased one: the false alarm is not beaten, so no PASS.
    cell = judge(LOCALISATION, RMA, "M", _s(0.7), {"Random": _s(0.1, seed=11), FALSE_ALARM: _s(0.7, seed=4)}, _loc())
    assert cell.outcome == INCONCLUSIVE and f"neither beats nor is beaten by {FALSE_ALARM}" in cell.message
    # Higher on the control model than on the biased one: the false alarm beats the method, a FAIL.
    worse = judge(LOCALISATION, RMA, "M", _s(0.7), {"Random": _s(0.1, seed=11), FALSE_ALARM: _s(0.8, seed=4)}, _loc())
    assert worse.outcome == FAIL and f"is beaten by {FALSE_ALARM}" in worse.message
    assert worse.comparisons[FALSE_ALARM]["lost"] and not worse.comparisons["Random"]["lost"]


def test_lower_is_better_metrics_flip_the_comparison():
    stable = judge(NOISE_STABILITY, MAXSENS, "M", _s(0.2), {"Random": _s(1.5, seed=13)}, _stab())
    assert stable.outcome == PASS and stable.skill["mean"] == pytest.approx(1 - 0.2 / 1.5, abs=0.01)
    unstable = judge(NOISE_STABILITY, MAXSENS, "M", _s(1.0), {"Random": _s(1.5, seed=13)}, _stab())
    assert unstable.outcome == FAIL and "lies wholly below the pass level" in unstable.message


def test_nan_scores_raise_for_the_caller_to_make_an_error_cell():
    # On a metric that declares no collapse (localisation's do: a constant map points nowhere).
    assert not MAXSENS.collapse
    with pytest.raises(ValueError, match="NaN"):
        judge(NOISE_STABILITY, MAXSENS, "M", np.array([0.1, np.nan]), {})


def test_validity_needs_the_positive_control_to_beat_the_negative_one():
    ok, why = anchor_validity(RMA, _loc())
    assert ok and "negative Random" in why and "positive Oracle" in why and "(yes)" in why
    broken, why = anchor_validity(RMA, Anchors("Random", "Oracle", _s(0.1), _s(0.1, seed=1)))
    assert not broken and "(NO)" in why
    # On a lower-is-better metric the positive control must score lower.
    assert anchor_validity(MAXSENS, _stab())[0]
    assert not anchor_validity(MAXSENS, Anchors("Random", "FixedPattern", np.zeros(32), _s(1.5)))[0]
    # Controls that do not order give no skill and no pass level: the cell cannot pass, and with no scale to fall
    # short on it is INCONCLUSIVE (uninformative, so it never votes), unless a control beats it.
    assert skill_scores(RMA, _s(0.5), Anchors("Random", "Oracle", _s(0.5), _s(0.2))) is None
    cell = judge(LOCALISATION, RMA, "M", _s(0.9), {}, Anchors("Random", "Oracle", _s(0.5), _s(0.2)))
    assert cell.outcome == INCONCLUSIVE and cell.informative is False and "no pass level" in cell.message
    assert not cell.decides and "to decide it" not in cell.message
    beaten = judge(LOCALISATION, RMA, "M", _s(0.1), {"Sobel": _s(0.5, seed=3)}, Anchors("Random", "Oracle", _s(0.5), _s(0.2)))
    assert beaten.outcome == FAIL and "is beaten by Sobel" in beaten.message


def _cell(method, metric, outcome, informative=True, suite="watermark_localisation", mean=0.5, skill=None):
    prop = PROPERTIES[suite]
    m = prop.metric(metric)
    score = None if outcome in (NA, ERROR) else {"mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1, "n": 8}
    skills = [] if skill is None or score is None else list(_s(skill, n=8, sd=0.05, seed=len(method)))
    return Cell(suite=suite, suite_version=prop.version, property=prop.name, metric=metric, method=method,
                direction=m.direction, threshold=0.2, outcome=outcome, message=f"{method} {outcome}",
                score=score, informative=informative, skills=skills)


def test_property_verdict_majority_of_informative_cells():
    mk = lambda *outs: [_cell("M", "RelevanceMassAccuracy", o) for o in outs]  # noqa: E731
    assert property_verdict(mk(PASS, PASS, FAIL)) == PASS
    assert property_verdict(mk(PASS, PASS, INCONCLUSIVE)) == PASS
    assert property_verdict(mk(FAIL, FAIL, PASS)) == FAIL
    assert property_verdict(mk(FAIL, FAIL, INCONCLUSIVE)) == FAIL
    # An even split of decided cells is no strict majority of passes: FAIL, as under the two-outcome rule.
    assert property_verdict(mk(PASS, FAIL)) == FAIL
    assert property_verdict(mk(PASS, PASS, FAIL, FAIL)) == FAIL
    # The undecided cells hold the balance: deciding them could give a strict majority either way.
    assert property_verdict(mk(PASS, FAIL, INCONCLUSIVE)) == INCONCLUSIVE
    assert property_verdict(mk(INCONCLUSIVE, INCONCLUSIVE, FAIL)) == INCONCLUSIVE
    # Even were the undecided cell a pass, 2 of 4 is no strict majority: FAIL.
    assert property_verdict(mk(PASS, FAIL, FAIL, INCONCLUSIVE)) == FAIL
    # A COLLAPSED cell votes as a fail (its test fails).
    assert property_verdict(mk(COLLAPSED, FAIL, PASS)) == FAIL
    assert property_verdict(mk(PASS, ERROR, PASS)) == ERROR
    assert property_verdict(mk(NA, NA)) == NA
    only_uninformative = [_cell("M", "RelevanceMassAccuracy", PASS, informative=False)]
    assert property_verdict(only_uninformative) == UNDECIDED
    # An uninformative FAIL does not outvote informative passes.
    assert property_verdict(mk(PASS) + [_cell("M", "AUC", FAIL, informative=False)]) == PASS


def test_thresholds_are_validated():
    with pytest.raises(ConfigError, match="RelevanceMassAccuracy"):
        LOCALISATION.with_thresholds({"RelevanceMassAccuracy": 1.5})
    with pytest.raises(ConfigError):
        LOCALISATION.with_thresholds({"AUC": float("nan")})
    assert LOCALISATION.with_thresholds({"AUC": 0.8}).metric("AUC").threshold == 0.8
    with pytest.raises(ConfigError, match="Did you mean"):
        LOCALISATION.metric("RelevanceMasAccuracy")


def test_cells_round_trip_through_json():
    c = _cell("Saliency", "AUC", PASS)
    assert Cell.from_json(c.to_json()) == Cell.from_json(Cell.from_json(c.to_json()).to_json())


def test_reports_are_deterministic_and_rank_by_effect_size(tmp_path):
    cells = [
        _cell("Good", "RelevanceMassAccuracy", PASS, skill=0.9), _cell("Good", "AUC", PASS, skill=0.8),
        _cell("Bad", "RelevanceMassAccuracy", FAIL, mean=0.05, skill=0.1), _cell("Bad", "AUC", FAIL, skill=0.2),
        _cell("Broken", "RelevanceMassAccuracy", ERROR), _cell("Broken", "AUC", PASS, skill=0.9),
        _cell("Oracle", "MPRT", NA, suite="randomisation"),
    ]
    summary = summarise(cells)
    assert [r["method"] for r in summary["overall"]] == ["Good", "Bad", "Broken", "Oracle"]
    # Broken has an ERROR property and Oracle no graded one: both unranked, listed last.
    assert [r["rank_label"] for r in summary["overall"]] == ["1", "2", "—", "—"]
    assert summary["verdicts"]["watermark_localisation"]["Broken"] == ERROR
    assert summary["verdicts"]["randomisation"]["Oracle"] == NA
    run = {"profile": {"name": "quick"}, "seed": 0, "git": "abc", "device": "cpu"}
    record = build_record(list(reversed(cells)), run)
    a = write_reports(record, tmp_path / "a")
    b = write_reports(build_record(cells, run), tmp_path / "b")
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    md = (tmp_path / "a" / "leaderboard.md").read_text()
    assert "RelevanceMassAccuracy ↑ (pass 0.2)" in md and "ERROR" in md and "n/a" in md
    assert "Ranks come from effect sizes, not names" in md
    text = (tmp_path / "a" / "leaderboard.json").read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert {c["method"] for c in data["cells"]} == {"Good", "Bad", "Broken", "Oracle"}
    assert len(cells_frame(cells)) == len(cells)
    assert render_markdown(record, cells) == md


def test_every_metric_builds_with_abs_and_per_sample_normalisation():
    # The grader hands Quantus |a|; that is only score-neutral because every metric takes abs itself.
    from benchmark.profiles import PROFILES

    for prop in PROPERTIES.values():
        for m in prop.metrics:
            metric = m.build(PROFILES["quick"], 0)
            assert metric.abs is True, (prop.key, m.name)
            assert metric.normalise_func_kwargs == {"normalise_axes": (1, 2, 3)}, (prop.key, m.name)
            assert m.reference and m.direction in ("higher", "lower") and m.threshold is None
            assert m.bounds[1] - m.bounds[0] <= 2 or m.tolerance is not None, (prop.key, m.name)


def test_informational_properties_rank_by_their_skill_best_first():
    cells = [_cell(m, metric, INFO, suite="complexity", skill=skill)
             for m, skill in (("Dense", 0.1), ("Sparse", 0.9), ("Middle", 0.5)) for metric in ("Sparseness", "Complexity")]
    summary = summarise(cells)
    assert summary["order"]["complexity"] == ["Sparse", "Middle", "Dense"]
    assert summary["ranks"]["complexity"] == {"Sparse": 1, "Middle": 2, "Dense": 3}


def _iv(mean, half):
    return Interval(mean, mean - half, mean + half, 16)


def test_methods_share_a_rank_only_when_their_intervals_overlap():
    effects = {"A": _iv(0.9, 0.05), "B": _iv(0.8, 0.08), "C": _iv(0.5, 0.05), "D": _iv(0.55, 0.2), "E": None}
    ranks = dominance_ranks(effects)
    # A and B overlap (=1); C is below both (3); D overlaps everything down to C but lies below A (2); E unranked.
    assert ranks == {"A": 1, "B": 1, "C": 3, "D": 2, "E": None}
    assert rank_labels(ranks) == {"A": "=1", "B": "=1", "C": "3", "D": "2", "E": "—"}
    for m, rm in ranks.items():
        for o, ro in ranks.items():
            if m != o and rm is not None and rm == ro:
                assert effects[m].low <= effects[o].high and effects[o].low <= effects[m].high


# --- one standard for threshold and controls; metrics that report without voting -------------------------------


def test_the_pass_level_is_judged_on_the_ci_like_the_controls():
    # Mean skill above the pass level, but its CI reaches below it: neither supported nor refuted, so INCONCLUSIVE
    # (controls are beaten), and the message says the skill CI straddles the pass level.
    straddles = np.r_[np.full(8, 0.2), np.full(8, 1.0)] + _s(0.0, n=16, sd=0.01)
    cell = judge(LOCALISATION, RMA, "M", straddles, {"Random": _s(0.1, n=16, seed=11)}, _loc(n=16))
    assert cell.skill["ci_low"] < 0.5 < cell.skill["ci_high"]
    ci = f"[{cell.skill['ci_low']:.3f}, {cell.skill['ci_high']:.3f}]"
    assert cell.outcome == INCONCLUSIVE and f"INCONCLUSIVE: skill CI {ci} straddles the pass level 0.5" in cell.message
    assert "to decide it, grade more images" in cell.message and "--bench-model-seeds 3" in cell.message
    # The same spread wholly below the pass level: FAIL. Wholly above: PASS.
    below = judge(LOCALISATION, RMA, "M", straddles - 0.45, {"Random": _s(0.1, n=16, seed=11)}, _loc(n=16))
    assert below.skill["ci_high"] < 0.5 and below.outcome == FAIL and "lies wholly below the pass level" in below.message
    above = judge(LOCALISATION, RMA, "M", straddles * 0.3 + 0.7, {"Random": _s(0.1, n=16, seed=11)}, _loc(n=16))
    assert above.skill["ci_low"] > 0.5 and above.outcome == PASS


def test_a_fixed_threshold_decides_three_ways_on_the_score_ci():
    fixed = LOCALISATION.with_thresholds({"RelevanceMassAccuracy": 0.5}).metric("RelevanceMassAccuracy")
    random = {"Random": _s(0.1, seed=11)}
    assert judge(LOCALISATION, fixed, "M", _s(0.6), random, _loc()).outcome == PASS
    low = judge(LOCALISATION, fixed, "M", _s(0.4), random, _loc())
    assert low.outcome == FAIL and "lies wholly on the fail side of the fixed threshold 0.5" in low.message
    edge = judge(LOCALISATION, fixed, "M", _s(0.5, sd=0.2), random, _loc())
    assert edge.outcome == INCONCLUSIVE and "straddles the fixed threshold 0.5" in edge.message


def test_identical_differences_are_not_evidence_below_six_images():
    # Five images, each exactly 0.5 above the control: a zero-width CI, which a percentile bootstrap called a win.
    def anchors(n):
        return Anchors("Random", "Oracle", np.full(n, 0.1), np.full(n, 1.0))

    # Nothing refutes them either: too few to decide, so INCONCLUSIVE.
    five = judge(LOCALISATION, RMA, "M", np.full(5, 0.6), {"Random": np.full(5, 0.1)}, anchors(5))
    assert five.outcome == INCONCLUSIVE and not five.comparisons["Random"]["beaten"]
    assert "has no spread on too few images (5)" in five.message and "neither beats nor is beaten by Random" in five.message
    assert judge(LOCALISATION, RMA, "M", np.full(6, 0.6), {"Random": np.full(6, 0.1)}, anchors(6)).outcome == PASS


def test_a_metric_that_does_not_vote_is_reported_but_never_decides():
    ris = NOISE_STABILITY.metric("RelativeInputStability")
    assert ris.no_vote
    cell = judge(NOISE_STABILITY, ris, "M", _s(5000.0, sd=50), {"Random": _s(10.0, seed=1)})
    assert cell.outcome == INFO and cell.votes is False and "reported, not voted" in cell.message
    passing = [judge(NOISE_STABILITY, MAXSENS, "M", _s(0.2), {"Random": _s(1.5, seed=13)}, _stab()) for _ in range(2)]
    # Two voting passes and a non-voting cell that would have failed: the property passes on its votes alone.
    assert property_verdict([*passing, cell]) == PASS
    assert not Cell.from_json(cell.to_json()).decides


def test_a_pass_that_does_not_survive_benjamini_hochberg_does_not_count():
    from benchmark.grading.verdict import fdr_survivors

    def cell(method, metric, p, outcome=PASS):
        c = _cell(method, metric, outcome, skill=0.8)
        c.p_value = p
        return c

    # Four cells of one property: three strong passes and one marginal pass (p = 0.04, alone it would pass).
    cells = [cell("A", "RelevanceMassAccuracy", 0.001), cell("A", "AUC", 0.001), cell("B", "RelevanceMassAccuracy", 0.001),
             cell("B", "AUC", 0.04), cell("C", "RelevanceMassAccuracy", 0.9, FAIL), cell("C", "AUC", 0.8, FAIL)]
    survivors, stats = fdr_survivors(cells)
    # BH over 6: 0.04 > 4 * 0.05 / 6 = 0.033, so B's AUC pass is a likely false discovery.
    assert ("watermark_localisation", "AUC", "B") not in survivors and len(survivors) == 3
    assert stats["watermark_localisation"] == {"family": 6, "raw_pass": 4, "survive": 3, "q": 0.05}
    by = {m: [c for c in cells if c.method == m] for m in "ABC"}
    # Unadjusted, B passes both metrics; after the step one of two is not a strict majority. The removed pass is
    # weak evidence for the property, not evidence against it: INCONCLUSIVE, not FAIL.
    assert property_verdict(by["B"]) == PASS and property_verdict(by["B"], survivors) == INCONCLUSIVE
    assert property_verdict(by["A"], survivors) == PASS
    summary = summarise(cells)
    assert summary["verdicts"]["watermark_localisation"] == {"A": PASS, "B": INCONCLUSIVE, "C": FAIL}
    md = render_markdown(build_record(cells, {"profile": {"name": "quick"}}), cells)
    assert "(not after BH)" in md and "3 of 4 passing cells survive" in md
    # INCONCLUSIVE cells stay in the family (they have p-values): the family does not depend on the outcomes.
    undecided = [*cells[:4], cell("C", "RelevanceMassAccuracy", 0.9, INCONCLUSIVE), cell("C", "AUC", 0.8, INCONCLUSIVE)]
    again, stats = fdr_survivors(undecided)
    assert again == survivors and stats["watermark_localisation"]["family"] == 6


MPRT = PROPERTIES["randomisation"].metric("MPRT")


def _rand(n=32):
    # Randomisation's anchors on MPRT (lower is better): Sobel unchanged (1), ModelSeededRandom redrawn (0).
    return Anchors("Sobel", "ModelSeededRandom", _s(0.98, n=n, sd=0.005, seed=14), _s(0.0, n=n, seed=15))


def test_a_collapsed_map_is_its_own_outcome_not_similarity_zero():
    from benchmark.grading.metrics import spearman_or_collapsed

    a = np.random.default_rng(0).random((3, 1, 8, 8))
    b = a.copy()
    b[1] = 0.0  # collapsed after randomisation
    r = spearman_or_collapsed(a, b, batched=True)
    assert r[0] == pytest.approx(1.0) and np.isnan(r[1]) and r[2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        spearman_or_collapsed(a, np.full_like(a, np.nan), batched=True)
    # Normalised as the rank similarities' recipes do, an all-zero map among non-zero ones stays a constant map
    # (Quantus' normalise_by_max divides it 0/0 into NaN, which the similarity refuses as a broken map).
    from benchmark.grading.metrics import MPRT as MPRT_RECIPE
    from benchmark.grading.metrics import normalise_by_own_max
    from benchmark.profiles import PROFILES

    norm = MPRT_RECIPE.kwargs(PROFILES["quick"])
    b_norm = norm["normalise_func"](b, **norm["normalise_func_kwargs"])
    assert np.isfinite(b_norm).all() and (b_norm[1] == 0).all() and b_norm[0].max() == pytest.approx(1.0)
    assert np.isnan(spearman_or_collapsed(a, b_norm, batched=True)[1])
    assert np.array_equal(normalise_by_own_max(a, (1, 2, 3)), a / a.max(axis=(1, 2, 3), keepdims=True))
    # A whole batch of collapsed maps (a few images per training seed) reaches a collapse-scoring metric; any other
    # metric still refuses it as Quantus does.
    from benchmark.grading.quantus_compat import _assert_attributions

    _assert_attributions(a, np.zeros_like(a), constant_ok=True)
    with pytest.raises(AssertionError, match="all equal to zero"):
        _assert_attributions(a, np.zeros_like(a))
    prop = PROPERTIES["randomisation"]
    # Most maps collapsed: neither PASS nor FAIL, and the cell says how many.
    mostly = np.where(np.arange(32) < 20, np.nan, 0.1)
    cell = judge(prop, MPRT, "M", mostly, {"Sobel": _s(0.98, seed=14)}, _rand())
    assert cell.outcome == "COLLAPSED" and cell.n_collapsed == 20 and "20 of 32 maps collapsed" in cell.message
    assert cell.scores[:20] == [None] * 20 and cell.scores[20] == pytest.approx(0.1)
    assert not cell.decides or property_verdict([cell]) == FAIL  # decides, and does not pass
    # A few collapsed maps: left out of every statistic (paired with the controls), judged on the rest.
    few = _s(0.05, seed=16)
    few[:3] = np.nan
    judged = judge(prop, MPRT, "M", few, {"Sobel": _s(0.98, seed=14)}, _rand())
    assert judged.outcome == PASS and judged.n_collapsed == 3 and "3 of 32 images left out" in judged.message
    assert judged.score["n"] == 29 and judged.scores[:3] == [None] * 3 and len(judged.skills) == 32
    assert Cell.from_json(judged.to_json()).scores[:3] == [None] * 3
    # On a metric that does not declare collapse, a NaN is still an error.
    with pytest.raises(ValueError, match="NaN"):
        judge(PROPERTIES["faithfulness"], PROPERTIES["faithfulness"].metrics[0], "M", few, {})


def test_several_training_seeds_judge_over_seeds_then_images():
    # Seed 0's model yields a method that localises; seed 1's does not. Pooled as if one seed, the 64 images pass;
    # judged over seeds (t interval on the seeds' means) the seed-to-seed spread is part of the CI and they cannot.
    scores = np.r_[_s(0.95, seed=1), _s(0.35, seed=2)]
    controls = {"Random": np.r_[_s(0.1, seed=11), _s(0.1, seed=21)]}
    anchors = Anchors("Random", "Oracle", controls["Random"], np.r_[_s(1.0, sd=0.001, seed=12), _s(1.0, sd=0.001, seed=22)])
    flat = judge(LOCALISATION, RMA, "M", scores, controls, anchors)
    nested = judge(LOCALISATION, RMA, "M", scores, controls, anchors, groups=np.repeat([0, 1], 32))
    assert flat.outcome == PASS and flat.seed_counts == []
    # The seeds disagree: the CI on their means straddles the pass level, and more seeds are what decides it.
    assert nested.outcome == INCONCLUSIVE and nested.seed_counts == [32, 32]
    assert "over 2 training seeds" in nested.message and "straddles the pass level" in nested.message
    assert "train more seeds (--bench-model-seeds above 2)" in nested.message
    assert nested.skill["ci_high"] - nested.skill["ci_low"] > 3 * (flat.skill["ci_high"] - flat.skill["ci_low"])
    # Seeds that agree keep the pass: the hierarchy widens the CI by what the seeds add, not by fiat.
    agree = np.r_[_s(0.8, seed=1), _s(0.8, seed=2)]
    assert judge(LOCALISATION, RMA, "M", agree, controls, anchors, groups=np.repeat([0, 1], 32)).outcome == PASS
    with pytest.raises(ValueError, match="seed labels"):
        judge(LOCALISATION, RMA, "M", scores, controls, anchors, groups=np.zeros(10))


def test_effects_of_several_seeds_average_image_by_image_within_each_seed():
    from benchmark.reporting.ranking import effect

    def cell(metric, skills, counts):
        c = judge(LOCALISATION, LOCALISATION.metric(metric), "M", _s(0.7, n=len(skills)), {},
                  _loc(n=len(skills)), groups=np.repeat(np.arange(len(counts)), counts))
        c.skills, c.seed_counts = list(skills), counts
        return c

    # Two metrics on prefixes of each seed's images (3 of 4, then all 4): the effect pairs image with image per seed.
    a = cell("RelevanceMassAccuracy", [0.1, 0.2, 0.3, 1.0, 1.0, 1.0, 1.0, 1.0], [4, 4])
    b = cell("RelevanceRankAccuracy", [0.3, 0.4, 0.5, 1.0, 1.0, 1.0], [3, 3])
    e = effect([a, b])
    assert e.n == 6 and e.mean == pytest.approx(np.mean([0.2, 0.3, 0.4, 1.0, 1.0, 1.0]))
