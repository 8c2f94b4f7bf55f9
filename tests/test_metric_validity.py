"""Metric validity and informational properties: a deliberately broken metric is flagged and decides nothing."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from benchmark.grading.metrics import Recipe
from benchmark.grading.properties import COMPLEXITY, FAITHFULNESS, HIGHER, PROPERTIES, MetricSpec
from benchmark.grading.verdict import (
    FAIL,
    INFO,
    NA,
    PASS,
    Anchors,
    Cell,
    anchor_validity,
    assert_cell,
    judge,
    property_verdict,
)
from benchmark.reporting.ranking import summarise
from benchmark.reporting.report import build_record, render_markdown

ROAD = FAITHFULNESS.metric("ROAD")
SPARSENESS = COMPLEXITY.metric("Sparseness")


def _s(mean, n=16, sd=0.02, seed=0):
    return np.random.default_rng(seed).normal(mean, sd, n)


class _Constant:
    """A 'metric' that gives every map the same score: it cannot tell a faithful map from noise."""

    def __call__(self, *, x_batch, **kwargs):
        return np.full(len(x_batch), 0.5)


class _Noise:
    """A 'metric' whose scores are noise seeded by the map: unrelated to the model's behaviour."""

    def __call__(self, *, x_batch, a_batch, **kwargs):
        seed = int.from_bytes(hashlib.sha256(np.ascontiguousarray(a_batch).tobytes()).digest()[:8], "little")
        return np.random.default_rng(seed).random(len(x_batch))


BROKEN = (
    MetricSpec("BrokenConstant", HIGHER, (0.0, 1.0), Recipe(lambda: _Constant(), common=False), "test double"),
    MetricSpec("BrokenNoise", HIGHER, (0.0, 1.0), Recipe(lambda: _Noise(), common=False), "test double"),
)


def _faith(oracle=0.6, random=0.0):
    return Anchors("Random", "Oracle", _s(random, seed=1), _s(oracle, seed=2))


def test_validity_needs_the_positive_control_to_beat_the_negative_one_on_the_metric_direction():
    assert anchor_validity(ROAD, _faith())[0]
    ok, why = anchor_validity(ROAD, _faith(oracle=0.0))
    assert not ok and "negative Random" in why and "positive Oracle" in why and "NO" in why
    # A metric pointing the wrong way (the positive control scores worse than noise) is uninformative too.
    assert not anchor_validity(ROAD, _faith(oracle=-0.5))[0]


def test_an_uninformative_pass_does_not_rescue_a_method():
    real = judge(FAITHFULNESS, ROAD, "M", _s(0.0), {"Random": _s(0.0, seed=1)}, _faith())
    assert real.outcome == FAIL
    lucky = dataclasses.replace(judge(FAITHFULNESS, ROAD, "M", _s(0.5), {"Random": _s(0.0, seed=1)}, _faith()),
                                metric="IROF", informative=False, validity_reason="Oracle beats Random: NO")
    assert lucky.outcome == PASS
    real.informative = True
    assert property_verdict([real, lucky]) == FAIL
    with pytest.raises(pytest.skip.Exception, match="uninformative"):
        assert_cell(lucky)


def test_informational_cells_report_scores_but_neither_pass_nor_fail():
    anchors = Anchors("Random", "Oracle", _s(0.33, seed=1), _s(0.95, seed=2))
    dense = judge(COMPLEXITY, SPARSENESS, "Dense", _s(0.1), {"Random": _s(0.33, seed=1)}, anchors)
    sparse = judge(COMPLEXITY, SPARSENESS, "Sparse", _s(0.9), {"Random": _s(0.33, seed=1)}, anchors)
    assert dense.outcome == sparse.outcome == INFO
    assert "does not beat Random" in dense.message and "beats Random" in sparse.message
    assert sparse.score["mean"] == pytest.approx(0.9, abs=0.02)
    assert property_verdict([dense]) == INFO
    with pytest.raises(pytest.skip.Exception, match="informational"):
        assert_cell(sparse)


def test_informational_properties_do_not_count_in_the_overall_ranking():
    def cell(method, suite, metric, outcome):
        prop = PROPERTIES[suite]
        return Cell(suite=suite, suite_version=prop.version, property=prop.name, metric=metric, method=method,
                    direction=prop.metric(metric).direction, threshold=0.6,
                    outcome=outcome, message="", score={"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 16},
                    informative=True, validity_reason="Oracle beats Random: yes", skills=[0.5, 0.6, 0.7])

    cells = [cell("A", "faithfulness", "ROAD", PASS), cell("A", "complexity", "Sparseness", INFO),
             cell("B", "faithfulness", "ROAD", PASS)]
    overall = {r["method"]: r for r in summarise(cells)["overall"]}
    assert overall["A"]["applicable"] == overall["B"]["applicable"] == 1
    assert overall["A"]["complexity"] == INFO
    md = render_markdown(build_record(cells, {"profile": {"name": "quick"}}), cells)
    assert "**Informational**" in md and "Sparseness ↑ (ref 0.6)" in md and "0.500 [0.400, 0.600] INFO" in md
    # The overall rank is the localisation rank: with faithfulness graded alone, no method is ranked.
    assert [r["rank_label"] for r in summarise(cells)["overall"]] == ["—", "—"]


@pytest.fixture(scope="module")
def broken_grading(quick_bench):
    from benchmark.grading.grader import Grader, grade_cell

    prop = dataclasses.replace(FAITHFULNESS, metrics=(FAITHFULNESS.metric("RegionPerturbation"), *BROKEN))
    grader = Grader(quick_bench)
    cells = [grade_cell(grader, prop, m, method) for m in prop.metrics for method in ("Saliency", "Random")]
    return prop, cells


def test_a_broken_metric_is_flagged_uninformative_in_a_real_run(broken_grading):
    prop, cells = broken_grading
    by = {(c.metric, c.method): c for c in cells}
    assert by[("RegionPerturbation", "Saliency")].informative is True
    for m in BROKEN:
        c = by[(m.name, "Saliency")]
        assert c.informative is False, (m.name, c.validity_reason)
        assert "negative Random" in c.validity_reason and "positive Oracle" in c.validity_reason
        assert "(NO)" in c.validity_reason
        with pytest.raises(pytest.skip.Exception, match="uninformative"):
            assert_cell(c)


def test_broken_metrics_do_not_decide_verdicts_and_show_in_the_validity_table(broken_grading):
    prop, cells = broken_grading
    for method in ("Saliency", "Random"):
        mine = [c for c in cells if c.method == method]
        real = [c for c in mine if c.metric == "RegionPerturbation"]
        assert property_verdict(mine) == property_verdict(real) == real[0].outcome
    md = render_markdown(build_record(cells, {"profile": {"name": "quick"}}), cells)
    table = md.split("## Metric validity", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| Faithfulness")]
    assert sorted(r.split("|")[2].strip() for r in rows) == ["BrokenConstant", "BrokenNoise", "RegionPerturbation"]
    assert sum("| NO " in r for r in rows) == 2


def test_random_logit_is_not_applicable_on_a_two_class_model_and_says_why(quick_bench):
    from benchmark.grading.grader import Grader, grade_cell
    from benchmark.grading.properties import RANDOMISATION

    cell = grade_cell(Grader(quick_bench), RANDOMISATION, RANDOMISATION.metric("RandomLogit"), "Saliency")
    assert cell.outcome == NA and not cell.decides
    assert "2-class model" in cell.message and "at least 3 classes" in cell.message


# --- redundancy: the same measurement twice, the same maps twice -------------------------------------------------


def _scored(method, metric, mean, suite="watermark_localisation", scores=None, outcome=PASS):
    from benchmark.grading.properties import PROPERTIES

    m = PROPERTIES[suite].metric(metric)
    return Cell(suite=suite, suite_version="x", property=suite, metric=metric, method=method, direction=m.direction,
                threshold=m.threshold, outcome=outcome, message="", score={"mean": mean, "ci_low": mean, "ci_high": mean},
                scores=list(scores if scores is not None else [mean] * 4))


def test_metrics_that_rank_methods_alike_are_flagged_and_direction_is_taken_into_account():
    from benchmark.reporting.redundancy import metric_pairs

    methods = {"A": 0.1, "B": 0.3, "C": 0.5, "D": 0.7}
    cells = [_scored(m, "RelevanceMassAccuracy", v) for m, v in methods.items()]
    cells += [_scored(m, "AUC", v / 2 + 0.5) for m, v in methods.items()]  # same order: one measurement twice
    cells += [_scored(m, "PointingGame", v) for m, v in zip(methods, (0.9, 0.1, 0.8, 0.2))]  # another order
    # Lower is better: Selectivity that mirrors ROAD exactly ranks methods alike once signed.
    cells += [_scored(m, "ROAD", v, suite="faithfulness") for m, v in methods.items()]
    cells += [_scored(m, "Selectivity", 1 - v, suite="faithfulness") for m, v in methods.items()]
    pairs = {(p["a"], p["b"]): p for p in metric_pairs(cells)}
    assert pairs[("RelevanceMassAccuracy", "AUC")]["redundant"]
    assert not pairs[("RelevanceMassAccuracy", "PointingGame")]["redundant"]
    assert pairs[("Selectivity", "ROAD")]["redundant"] and pairs[("Selectivity", "ROAD")]["spearman"] > 0.99


def test_methods_with_the_same_scores_are_flagged_as_the_same_maps():
    from benchmark.reporting.redundancy import identical_methods

    metrics = ("RelevanceMassAccuracy", "RelevanceRankAccuracy", "PointingGame", "AUC")
    cells = [_scored(m, metric, 0.5, scores=[0.1 * i + k for k in range(4)])
             for m in ("LRPEpsilon", "InputXGradient") for i, metric in enumerate(metrics)]
    cells += [_scored("Saliency", metric, 0.5, scores=[0.2 * i + k for k in range(4)]) for i, metric in enumerate(metrics)]
    same = identical_methods(cells)
    assert [(p["a"], p["b"], p["agree"], p["cells"]) for p in same] == [("InputXGradient", "LRPEpsilon", 4, 4)]


def test_list_methods_names_the_methods_the_baseline_found_identical(tmp_path):
    import json

    from benchmark.methods.listing import format_method_table
    from benchmark.reporting.redundancy import equivalents_in_baseline

    metrics = ("RelevanceMassAccuracy", "RelevanceRankAccuracy", "PointingGame", "AUC")
    cells = {f"watermark_localisation::{metric}::{m}": {"scores": [0.1 * i + k for k in range(4)]}
             for m in ("LRPEpsilon", "InputXGradient") for i, metric in enumerate(metrics)}
    cells.update({f"watermark_localisation::{metric}::Saliency": {"scores": [0.3 * i + k for k in range(4)]}
                  for i, metric in enumerate(metrics)})
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"profile": "quick", "seed": 0, "cells": cells}))
    table = format_method_table("cheap", *equivalents_in_baseline(path))
    rows = {line.split()[0]: line for line in table.splitlines()}
    assert "InputXGradient (4/4)" in rows["LRPEpsilon"] and "LRPEpsilon (4/4)" in rows["InputXGradient"]
    assert "InputXGradient" not in rows["Saliency"] and str(path) in table
    # Without a baseline the column is empty, not an error.
    assert "(4/4)" not in format_method_table("cheap", *equivalents_in_baseline(tmp_path / "missing.json"))


def test_the_list_command_reads_the_committed_baseline(run_child):
    proc = run_child.bench("list", "methods", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "same maps as" in proc.stdout and "reports/baseline.json" in proc.stdout


def test_one_near_tie_in_hundreds_of_images_does_not_hide_the_same_maps():
    from benchmark.reporting.redundancy import identical_methods

    metrics = ("RelevanceMassAccuracy", "RelevanceRankAccuracy", "PointingGame", "AUC")
    base = [0.001 * k for k in range(400)]
    nudged = [v + (0.01 if k == 7 else 0.0) for k, v in enumerate(base)]  # one image of 400 rounds apart
    cells = [_scored("LRPEpsilon", m, 0.2, scores=base) for m in metrics]
    cells += [_scored("InputXGradient", m, 0.2, scores=nudged) for m in metrics]
    assert [(p["a"], p["b"], p["agree"]) for p in identical_methods(cells)] == [("InputXGradient", "LRPEpsilon", 4)]
    # Ten of 400 apart (2.5%) is another map.
    far = [v + (0.01 if k % 40 == 0 else 0.0) for k, v in enumerate(base)]
    cells = [_scored("LRPEpsilon", m, 0.2, scores=base) for m in metrics]
    cells += [_scored("InputXGradient", m, 0.2, scores=far) for m in metrics]
    assert identical_methods(cells) == []


class _CollapsesOnSaliency:
    """A rank-similarity 'metric' under which Saliency's first 3 maps collapse (NaN) and every other map is redrawn."""

    def __call__(self, *, x_batch, a_batch, **kwargs):
        out = np.zeros(len(x_batch))
        if np.asarray(a_batch).std() > 0 and kwargs.get("collapsed"):
            out[:3] = np.nan
        return out


def test_a_collapsed_map_reaches_the_cell_as_its_own_outcome_through_the_grader(quick_bench):
    from benchmark.grading.grader import Grader, grade_cell
    from benchmark.grading.properties import RANDOMISATION

    def spec(collapsed: bool) -> MetricSpec:
        recipe = Recipe(lambda: (lambda **kw: _CollapsesOnSaliency()(**kw, collapsed=collapsed)), common=False)
        return MetricSpec("CollapseDouble", "lower", (-1.0, 1.0), recipe, "test double", collapse="test collapse")

    prop = dataclasses.replace(RANDOMISATION, metrics=(spec(True),), beat=())
    one_seed = dataclasses.replace(quick_bench, replicates=[])  # the double collapses each grader's first 3 maps
    cell = grade_cell(Grader(one_seed), prop, prop.metrics[0], "Saliency")
    assert cell.outcome != "ERROR", cell.message
    assert cell.n_collapsed == 3 and cell.scores[:3] == [None] * 3 and "3 of" in cell.message
    # Without the declaration the same NaNs are an ERROR cell, never a silent pass.
    plain = dataclasses.replace(spec(True), collapse="")
    err = grade_cell(Grader(one_seed), dataclasses.replace(prop, metrics=(plain,)), plain, "Saliency")
    assert err.outcome == "ERROR" and "NaN" in err.message
