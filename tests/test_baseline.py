"""Regression baselines and the comparison rules, on synthetic cells (no models needed)."""

from __future__ import annotations

import json

import pytest

from benchmark import baseline as bl
from benchmark.properties import LOCALISATION, NOISE_STABILITY, PROPERTIES, RANDOMISATION
from benchmark.verdict import ERROR, FAIL, INFO, NA, PASS, Cell

RUN = {"profile": {"name": "quick"}, "seed": 0, "options": {"data_source": "procedural", "data_root": None},
       "git": "abc", "started": "2026-01-01T00:00:00Z", "versions": {"torch": "2"}}
CHECK = "suites/test_method_contract.py::TestMethodContract::test_contract[biased-cnn-Saliency]"


def _cell(method, metric="RelevanceMassAccuracy", outcome=PASS, mean=0.5, suite="watermark_localisation",
          version=None, threshold=None, informative=True):
    prop = PROPERTIES[suite]
    m = prop.metric(metric)
    score = None if outcome in (NA, ERROR) else {"mean": mean, "ci_low": mean - 0.05, "ci_high": mean + 0.05, "n": 16}
    return Cell(suite=suite, suite_version=version or prop.version, property=prop.name, metric=metric, method=method,
                direction=m.direction, threshold=m.threshold if threshold is None else threshold, outcome=outcome,
                message=f"{method} {outcome}", score=score, informative=informative)


def _status(changes, key):
    return next(c for c in changes if c.key == key)


def _k(method, metric="RelevanceMassAccuracy", suite="watermark_localisation"):
    return bl.cell_key(suite, metric, method)


@pytest.fixture
def base():
    cells = [_cell("Good"), _cell("Bad", outcome=FAIL, mean=0.05), _cell("Crashy", outcome=ERROR),
             _cell("Drifty", mean=0.5), _cell("Gone"), _cell("Unselected"),
             _cell("Stable", "MaxSensitivity", mean=0.10, suite="noise_stability"),
             _cell("Oracle", "MPRT", outcome=NA, suite="randomisation")]
    return bl.build_baseline(RUN, cells, {CHECK: "passed"})


def test_outcome_moves_decide_regressed_and_improved(base):
    run = [_cell("Good", outcome=FAIL, mean=0.1), _cell("Bad", mean=0.4), _cell("Crashy", outcome=FAIL, mean=0.1),
           _cell("Drifty", mean=0.5)]
    changes = bl.compare(base, run, {})
    assert _status(changes, _k("Good")).status == bl.REGRESSED and "PASS → FAIL" in _status(changes, _k("Good")).reason
    assert _status(changes, _k("Bad")).status == bl.IMPROVED
    assert _status(changes, _k("Crashy")).status == bl.IMPROVED  # ERROR -> FAIL: it grades again
    assert _status(changes, _k("Drifty")).status == bl.UNCHANGED
    assert bl.compare(base, [_cell("Bad", outcome=ERROR)], {})[0].status == bl.REGRESSED  # FAIL -> ERROR
    assert bl.compare(base, [_cell("Good", outcome=ERROR)], {})[0].status == bl.REGRESSED


def test_score_moves_beyond_the_tolerance_regress_even_with_the_same_verdict(base):
    tol = bl.tolerance(LOCALISATION.metric("RelevanceMassAccuracy"))
    assert tol == pytest.approx(0.05)
    worse = bl.compare(base, [_cell("Drifty", mean=0.5 - 2 * tol)], {})[0]
    assert worse.status == bl.REGRESSED and "0.500 → 0.400" in worse.reason and "tolerance 0.05" in worse.reason
    assert _status(bl.compare(base, [_cell("Drifty", mean=0.5 - tol / 2)], {}), _k("Drifty")).status == bl.UNCHANGED
    assert bl.compare(base, [_cell("Drifty", mean=0.5 + 2 * tol)], {})[0].status == bl.IMPROVED
    # Lower is better: a rising sensitivity is the wrong way.
    up = _cell("Stable", "MaxSensitivity", mean=0.2, suite="noise_stability")
    assert bl.compare(base, [up], {})[0].status == bl.REGRESSED
    down = _cell("Stable", "MaxSensitivity", mean=0.01, suite="noise_stability")
    assert bl.compare(base, [down], {})[0].status == bl.IMPROVED


def test_informational_cells_never_regress_on_a_moved_score_but_do_on_an_error():
    info = bl.build_baseline(RUN, [_cell("M", "Sparseness", outcome=INFO, mean=0.6, suite="complexity")], {})
    key = _k("M", "Sparseness", "complexity")
    moved = bl.compare(info, [_cell("M", "Sparseness", outcome=INFO, mean=0.2, suite="complexity")], {})[0]
    assert moved.status == bl.UNCHANGED and "informational" in moved.reason and moved.key == key
    broken = bl.compare(info, [_cell("M", "Sparseness", outcome=ERROR, suite="complexity")], {})[0]
    assert broken.status == bl.REGRESSED and "INFO → ERROR" in broken.reason


def test_default_tolerances_follow_the_metric_range():
    assert bl.tolerance(RANDOMISATION.metric("MPRT")) == pytest.approx(0.1)  # correlation in [-1, 1]
    assert bl.tolerance(NOISE_STABILITY.metric("MaxSensitivity")) == pytest.approx(0.035)  # open-ended: 10% of thr
    import dataclasses

    assert bl.tolerance(dataclasses.replace(LOCALISATION.metric("AUC"), tolerance=0.2)) == 0.2


def test_new_removed_not_run_and_not_comparable(base):
    run = [_cell("Brand"), _cell("Good", version="2"), _cell("Drifty", threshold=0.3),
           _cell("Oracle", "MPRT", outcome=FAIL, mean=0.9, suite="randomisation")]
    changes = bl.compare(base, run, {}, registered={"Good", "Bad", "Crashy", "Drifty", "Unselected", "Brand",
                                                    "Stable", "Oracle"})
    assert _status(changes, _k("Brand")).status == bl.NEW
    mismatch = _status(changes, _k("Good"))
    assert mismatch.status == bl.NOT_COMPARABLE and mismatch.reason == "suite v2 vs baseline v1"
    assert _status(changes, _k("Drifty")).status == bl.NOT_COMPARABLE
    assert "applicability" in _status(changes, _k("Oracle", "MPRT", "randomisation")).reason
    assert _status(changes, _k("Gone")).status == bl.REMOVED
    assert _status(changes, _k("Unselected")).status == bl.NOT_RUN
    assert not any(c.status == bl.REGRESSED for c in changes)
    lines = [text for text, _ in bl.report_lines(changes)]
    assert any("method Brand: 1 cell(s) (1 PASS)" in t for t in lines)
    assert any("suite v2 vs baseline v1" in t for t in lines)


def test_a_property_changed_without_a_version_bump_fails_the_comparison(base):
    base["suites"]["watermark_localisation"]["fingerprint"] = "stale"
    changes = bl.compare(base, [_cell("Good")], {})
    assert changes[0].status == bl.UNVERSIONED and "bump its version" in changes[0].reason
    assert bl.fails(changes)
    assert not bl.fails(bl.compare(bl.build_baseline(RUN, [_cell("Good")], {}), [_cell("Good")], {}))


def test_another_definition_of_the_profile_is_refused(base):
    other = bl.identity({**RUN, "profile": {"name": "quick", "n_eval": 99}})
    with pytest.raises(bl.BaselineError, match="another definition of profile 'quick'"):
        bl.check_identity(base, other, "b.json")
    bl.check_identity(base, other, "b.json", world=False)  # an update may replace it


def test_checks_compare_like_cells(base):
    assert bl.compare(base, [], {CHECK: "failed"})[0].status == bl.REGRESSED
    assert _status(bl.compare(base, [], {CHECK: "passed"}), CHECK).status == bl.UNCHANGED
    assert bl.compare(base, [], {"suites/x.py::test_new": "failed"})[0].status == bl.NEW


def test_expected_failures_only_for_matching_version_and_threshold(base):
    thr = LOCALISATION.metric("RelevanceMassAccuracy").threshold
    assert "baseline FAIL" in bl.expected_failure(base, _k("Bad"), "1", thr)
    assert "baseline ERROR" in bl.expected_failure(base, _k("Crashy"), "1", thr)
    assert bl.expected_failure(base, _k("Good"), "1", thr) is None
    assert bl.expected_failure(base, _k("Bad"), "2", thr) is None  # another suite version: graded, not expected
    assert bl.expected_failure(base, _k("Bad"), "1", 0.9) is None
    assert bl.expected_failure(base, _k("Nobody"), "1", thr) is None
    assert bl.expected_failure({**base, "checks": {CHECK: "failed"}}, CHECK) is not None


@pytest.mark.parametrize(("content", "message"), [
    (None, "No baseline at"),
    ("{not json", "is not valid JSON"),
    ('{"kind": "something else"}', "is not a shortcut-bench baseline"),
    ('{"kind": "shortcut-bench baseline", "schema": 99}', "baseline schema 99"),
    ('{"kind": "shortcut-bench baseline", "schema": 1, "profile": "quick", "seed": "zero", "data": {}, '
     '"cells": {}, "checks": {}}', "'seed' must be a int"),
    ('{"kind": "shortcut-bench baseline", "schema": 1, "profile": "quick", "seed": 0, "data": {}, '
     '"cells": {"nokey": {}}, "checks": {}}', "cell 'nokey' needs"),
])
def test_bad_baseline_files_are_refused_with_the_fix(tmp_path, content, message):
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(bl.BaselineError, match="--bench-update-baseline") as exc:
        bl.load_baseline(path)
    assert message in str(exc.value)


def test_another_profile_or_seed_is_refused(base):
    ident = bl.identity(RUN)
    bl.check_identity(base, ident, "b.json")
    with pytest.raises(bl.BaselineError, match="profile 'quick', seed 0.*this run is profile 'standard'"):
        bl.check_identity(base, {**ident, "profile": "standard"}, "b.json")
    with pytest.raises(bl.BaselineError, match="--bench-seed 0"):
        bl.check_identity(base, {**ident, "seed": 1}, "b.json")


def test_update_keeps_unselected_cells_drops_stale_ones_and_records_the_change(base, tmp_path):
    base["cells"][_k("Old", "MPRT", "randomisation")] = {**base["cells"][_k("Good")], "suite_version": "0"}
    run = [_cell("Good", outcome=FAIL, mean=0.1), _cell("Brand")]
    new = bl.updated_baseline(base, {**RUN, "git": "def"}, run, {CHECK: "passed"},
                              registered={"Good", "Bad", "Crashy", "Drifty", "Unselected", "Brand", "Stable", "Oracle"})
    assert new["cells"][_k("Good")]["outcome"] == FAIL
    assert _k("Brand") in new["cells"] and _k("Unselected") in new["cells"] and _k("Bad") in new["cells"]
    assert _k("Gone") not in new["cells"]  # its method is no longer registered
    assert _k("Old", "MPRT", "randomisation") not in new["cells"]  # recorded for another suite version
    last = new["history"][-1]
    assert last["git"] == "def" and last["previous_git"] == "abc"
    assert any(line.startswith(_k("Good")) and "regressed" in line for line in last["changed"])
    assert any(line.startswith(_k("Brand")) and "new" in line for line in last["changed"])
    # The kept cells of a suite this run did not grade keep its fingerprint, so an unversioned change is still caught.
    assert new["suites"]["noise_stability"] == base["suites"]["noise_stability"]
    path = bl.write_baseline(tmp_path / "b.json", new)
    assert bl.load_baseline(path)["cells"] == new["cells"]
    assert "scores" not in json.dumps(new)  # compact: no per-sample scores


def test_comparison_reports_are_written(base, tmp_path):
    changes = bl.compare(base, [_cell("Good", outcome=FAIL, mean=0.1), _cell("Brand")], {})
    md, js = bl.write_comparison(changes, tmp_path, "reports/baseline.json", base, RUN)
    text = md.read_text()
    assert "**1 regressed**" in text and "## Regressed (1)" in text and _k("Good") in text and "## New (1)" in text
    data = json.loads(js.read_text())
    assert data["regressed"] is True and data["counts"]["new"] == 1


def test_baseline_and_compare_commands_work_on_stored_records(tmp_path, capsys):
    from benchmark.__main__ import main
    from benchmark.report import build_record

    run = {**RUN, "data": {"code_version": "2"}}
    first = tmp_path / "first" / "run.json"
    first.parent.mkdir()
    first.write_text(json.dumps(build_record([_cell("Saliency"), _cell("Random", outcome=FAIL, mean=0.05)], run)))
    path = tmp_path / "baseline.json"
    assert main(["baseline", str(first), "--out", str(path)]) == 0
    assert bl.load_baseline(path)["history"][-1]["changed"] == ["first baseline"]
    second = tmp_path / "second" / "run.json"
    second.parent.mkdir()
    second.write_text(json.dumps(build_record([_cell("Saliency", outcome=FAIL, mean=0.05),
                                               _cell("Random", outcome=FAIL, mean=0.05)], run)))
    assert main(["compare", str(second), "--baseline", str(path)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED  watermark_localisation::RelevanceMassAccuracy::Saliency: PASS 0.500 → FAIL 0.050" in out
    assert (second.parent / "compare.md").exists()
    assert main(["compare", str(first), "--baseline", str(path)]) == 0
    assert main(["compare", str(first), "--baseline", str(tmp_path / "nope.json")]) == 2
    assert "No baseline at" in capsys.readouterr().err
