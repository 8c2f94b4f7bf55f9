"""Verdict rules, statistics and leaderboard rendering on synthetic scores (no models needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark.errors import ConfigError
from benchmark.properties import FALSE_ALARM, LOCALISATION, NOISE_STABILITY, PROPERTIES, Validity
from benchmark.report import build_record, cells_frame, render_markdown, summarise, write_reports
from benchmark.verdict import ERROR, FAIL, INFO, NA, PASS, UNDECIDED, Cell, judge, property_verdict, validity

RMA = LOCALISATION.metric("RelevanceMassAccuracy")
MAXSENS = NOISE_STABILITY.metric("MaxSensitivity")
rng = np.random.default_rng(0)


def _s(mean, n=32, sd=0.02, seed=0):
    return np.random.default_rng(seed).normal(mean, sd, n)


def test_pass_needs_threshold_and_significant_win_over_every_control():
    good = judge(LOCALISATION, RMA, "M", _s(0.5), {"Random": _s(0.03, seed=1), "Sobel": _s(0.2, seed=2)})
    assert good.outcome == PASS and good.comparisons["Sobel"]["beaten"]
    # Meets the threshold but indistinguishable from Sobel: FAIL, and the message says why.
    tie = judge(LOCALISATION, RMA, "M", _s(0.2, seed=3), {"Random": _s(0.03, seed=1), "Sobel": _s(0.2, seed=2)})
    assert tie.outcome == FAIL and "does not beat Sobel" in tie.message
    # Beats the controls but misses the threshold.
    low = judge(LOCALISATION, RMA, "M", _s(0.08), {"Random": _s(0.01, seed=1)})
    assert low.outcome == FAIL and "misses the threshold" in low.message


def test_false_alarm_control_is_a_comparison_like_any_other():
    cell = judge(LOCALISATION, RMA, "M", _s(0.5), {"Random": _s(0.03, seed=1), FALSE_ALARM: _s(0.5, seed=4)})
    assert cell.outcome == FAIL and FALSE_ALARM in cell.message


def test_lower_is_better_metrics_flip_the_comparison():
    stable = judge(NOISE_STABILITY, MAXSENS, "M", _s(0.2), {"Random": _s(1.5, seed=1)})
    assert stable.outcome == PASS
    unstable = judge(NOISE_STABILITY, MAXSENS, "M", _s(1.5), {"Random": _s(0.2, seed=1)})
    assert unstable.outcome == FAIL


def test_nan_scores_raise_for_the_caller_to_make_an_error_cell():
    with pytest.raises(ValueError, match="NaN"):
        judge(LOCALISATION, RMA, "M", np.array([0.1, np.nan]), {})


def test_validity_flags_a_metric_that_cannot_separate_controls():
    ok, why = validity(RMA, LOCALISATION.validity, {"Oracle": _s(0.9), "Random": _s(0.03, seed=1)})
    assert ok and "yes" in why
    broken, why = validity(RMA, LOCALISATION.validity, {"Oracle": _s(0.03), "Random": _s(0.03, seed=1)})
    assert not broken and "NO" in why
    flags = (Validity("flags", bad="Random"),)
    assert validity(MAXSENS, flags, {"Random": _s(1.5)})[0]
    assert not validity(MAXSENS, flags, {"Random": _s(0.1)})[0]


def _cell(method, metric, outcome, informative=True, suite="watermark_localisation", mean=0.5):
    prop = PROPERTIES[suite]
    m = prop.metric(metric)
    score = None if outcome in (NA, ERROR) else {"mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1, "n": 8}
    return Cell(suite=suite, suite_version=prop.version, property=prop.name, metric=metric, method=method,
                direction=m.direction, threshold=m.threshold, outcome=outcome, message=f"{method} {outcome}",
                score=score, informative=informative)


def test_property_verdict_majority_of_informative_cells():
    mk = lambda *outs: [_cell("M", "RelevanceMassAccuracy", o) for o in outs]  # noqa: E731
    assert property_verdict(mk(PASS, PASS, FAIL)) == PASS
    assert property_verdict(mk(PASS, FAIL)) == FAIL
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


def test_reports_are_deterministic_and_rank_by_properties_passed(tmp_path):
    cells = [
        _cell("Good", "RelevanceMassAccuracy", PASS), _cell("Good", "AUC", PASS),
        _cell("Bad", "RelevanceMassAccuracy", FAIL, mean=0.05), _cell("Bad", "AUC", FAIL, mean=0.5),
        _cell("Broken", "RelevanceMassAccuracy", ERROR), _cell("Broken", "AUC", PASS),
        _cell("Oracle", "MPRT", NA, suite="randomisation"),
    ]
    summary = summarise(cells)
    assert [r["method"] for r in summary["overall"]][:1] == ["Good"]
    assert summary["verdicts"]["watermark_localisation"]["Broken"] == ERROR
    assert summary["verdicts"]["randomisation"]["Oracle"] == NA
    run = {"profile": {"name": "quick"}, "seed": 0, "git": "abc", "device": "cpu"}
    record = build_record(list(reversed(cells)), run)
    a = write_reports(record, tmp_path / "a")
    b = write_reports(build_record(cells, run), tmp_path / "b")
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    md = (tmp_path / "a" / "leaderboard.md").read_text()
    assert "RelevanceMassAccuracy ↑ (thr 0.2)" in md and "ERROR" in md and "n/a" in md
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
            assert m.reference and m.direction in ("higher", "lower")
            assert m.bounds[0] <= m.threshold <= m.bounds[1]


def test_informational_properties_rank_by_their_first_metric_best_first():
    cells = [_cell(m, metric, INFO, suite="complexity", mean=mean)
             for m, mean in (("Dense", 0.2), ("Sparse", 0.9), ("Middle", 0.5)) for metric in ("Sparseness", "Complexity")]
    ranks = summarise(cells)["ranks"]["complexity"]
    assert sorted(ranks, key=ranks.get) == ["Sparse", "Middle", "Dense"]  # Sparseness: higher is better


# --- one standard for threshold and controls; metrics that report without voting -------------------------------


def test_the_threshold_is_judged_on_the_ci_like_the_controls():
    # Mean above the threshold, but the CI reaches below it: not supported, so FAIL (controls are beaten).
    straddles = np.r_[np.full(8, 0.05), np.full(8, 0.45)] + _s(0.0, n=16, sd=0.01)
    cell = judge(LOCALISATION, RMA, "M", straddles, {"Random": np.full(16, 0.0) + _s(0.0, n=16, sd=0.001, seed=9)})
    assert cell.score["mean"] > RMA.threshold and cell.score["ci_low"] < RMA.threshold
    assert cell.outcome == FAIL and "misses the threshold (its CI reaches past it)" in cell.message


def test_identical_differences_are_not_evidence_below_six_images():
    # Five images, each exactly 0.5 above the control: a zero-width CI, which a percentile bootstrap called a win.
    five = judge(LOCALISATION, RMA, "M", np.full(5, 0.6), {"Random": np.full(5, 0.1)})
    assert five.outcome == FAIL and not five.comparisons["Random"]["beaten"]
    assert judge(LOCALISATION, RMA, "M", np.full(6, 0.6), {"Random": np.full(6, 0.1)}).outcome == PASS


def test_a_metric_that_does_not_vote_is_reported_but_never_decides():
    ris = NOISE_STABILITY.metric("RelativeInputStability")
    assert ris.no_vote
    cell = judge(NOISE_STABILITY, ris, "M", _s(5000.0, sd=50), {"Random": _s(10.0, seed=1)})
    assert cell.outcome == INFO and cell.votes is False and "reported, not voted" in cell.message
    passing = [judge(NOISE_STABILITY, MAXSENS, "M", _s(0.2), {"Random": _s(1.5, seed=1)}) for _ in range(2)]
    # Two voting passes and a non-voting cell that would have failed: the property passes on its votes alone.
    assert property_verdict([*passing, cell]) == PASS
    assert not Cell.from_json(cell.to_json()).decides
