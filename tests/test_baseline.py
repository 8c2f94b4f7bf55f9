"""Regression baselines and the comparison rules, on synthetic cells (no models needed)."""

from __future__ import annotations

import json

import pytest

from benchmark.grading.properties import LOCALISATION, NOISE_STABILITY, PROPERTIES, RANDOMISATION
from benchmark.grading.verdict import COLLAPSED, ERROR, FAIL, INCONCLUSIVE, INFO, NA, PASS, Cell, standard
from benchmark.regression import baseline as bl

N = 16
RUN = {"profile": {"name": "quick"}, "seed": 0, "options": {"data_source": "procedural", "data_root": None},
       "git": "abc", "started": "2026-01-01T00:00:00Z", "versions": {"torch": "2"}, "samples": list(range(N))}
# Per-image spread shared by the baseline and the run, as the same images on the same pinned model would give.
SPREAD = [0.03 * ((7 * i) % 5 - 2) for i in range(N)]
CHECK = "suites/test_method_contract.py::TestMethodContract::test_contract[biased-cnn-Saliency]"


def _cell(method, metric="RelevanceMassAccuracy", outcome=PASS, mean=0.5, suite="watermark_localisation",
          version=None, threshold=None, informative=True, noise=0.0, seed=0):
    import numpy as np

    prop = PROPERTIES[suite]
    m = prop.metric(metric)
    scored = outcome not in (NA, ERROR)
    jitter = np.random.default_rng(seed).normal(0, noise, N) if noise else np.zeros(N)
    scores = [mean + s - float(np.mean(SPREAD)) + j for s, j in zip(SPREAD, jitter)] if scored else []
    score = {"mean": float(np.mean(scores)), "ci_low": mean - 0.05, "ci_high": mean + 0.05, "n": N} if scored else None
    return Cell(suite=suite, suite_version=version or prop.version, property=prop.name, metric=metric, method=method,
                direction=m.direction, threshold=threshold, outcome=outcome,
                standard=standard(prop, m) if threshold is None else f"fixed threshold {threshold:g}",
                message=f"{method} {outcome}", score=score, informative=informative, scores=scores)


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
    assert worse.status == bl.REGRESSED and worse.before == "PASS 0.500" and worse.after == "PASS 0.400"
    assert "paired change -0.100" in worse.reason and "tolerance 0.05" in worse.reason
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
    assert bl.tolerance(NOISE_STABILITY.metric("MaxSensitivity")) == pytest.approx(0.035)  # open-ended: declared
    import dataclasses

    assert bl.tolerance(dataclasses.replace(LOCALISATION.metric("AUC"), tolerance=0.2)) == 0.2
    # An open-ended metric without a declared tolerance has no scale (its pass level moves with the controls).
    with pytest.raises(ValueError, match="declare its compare-mode tolerance"):
        bl.tolerance(dataclasses.replace(NOISE_STABILITY.metric("MaxSensitivity"), tolerance=None))


def test_new_removed_not_run_and_not_comparable(base):
    run = [_cell("Brand"), _cell("Good", version="99"), _cell("Drifty", threshold=0.3),
           _cell("Oracle", "MPRT", outcome=FAIL, mean=0.9, suite="randomisation")]
    changes = bl.compare(base, run, {}, registered={"Good", "Bad", "Crashy", "Drifty", "Unselected", "Brand",
                                                    "Stable", "Oracle"})
    assert _status(changes, _k("Brand")).status == bl.NEW
    mismatch = _status(changes, _k("Good"))
    assert mismatch.status == bl.NOT_COMPARABLE and mismatch.reason == f"suite v99 vs baseline v{LOCALISATION.version}"
    assert _status(changes, _k("Drifty")).status == bl.NOT_COMPARABLE
    assert "applicability" in _status(changes, _k("Oracle", "MPRT", "randomisation")).reason
    assert _status(changes, _k("Gone")).status == bl.REMOVED
    assert _status(changes, _k("Unselected")).status == bl.NOT_RUN
    assert not any(c.status == bl.REGRESSED for c in changes)
    lines = [text for text, _ in bl.report_lines(changes)]
    assert any("method Brand: 1 cell(s) (1 PASS)" in t for t in lines)
    assert any(f"suite v99 vs baseline v{LOCALISATION.version}" in t for t in lines)


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
    # How many images the map-only properties grade is a grading budget (scores pair by image id), not the world.
    assert bl.identity({**RUN, "profile": {"name": "quick", "n_map_only": 100}}) == bl.identity(RUN)


def test_checks_compare_like_cells(base):
    assert bl.compare(base, [], {CHECK: "failed"})[0].status == bl.REGRESSED
    assert _status(bl.compare(base, [], {CHECK: "passed"}), CHECK).status == bl.UNCHANGED
    assert bl.compare(base, [], {"suites/x.py::test_new": "failed"})[0].status == bl.NEW


def test_expected_failures_only_for_matching_version_and_threshold(base):
    thr = standard(LOCALISATION, LOCALISATION.metric("RelevanceMassAccuracy"))
    v = LOCALISATION.version
    assert "baseline FAIL" in bl.expected_failure(base, _k("Bad"), v, thr)
    assert "baseline ERROR" in bl.expected_failure(base, _k("Crashy"), v, thr)
    assert bl.expected_failure(base, _k("Good"), v, thr) is None
    assert bl.expected_failure(base, _k("Bad"), "99", thr) is None  # another suite version: graded, not expected
    assert bl.expected_failure(base, _k("Bad"), v, "fixed threshold 0.9") is None
    assert bl.expected_failure(base, _k("Nobody"), v, thr) is None
    assert bl.expected_failure({**base, "checks": {CHECK: "failed"}}, CHECK) is not None


def test_every_outcome_that_fails_its_test_is_an_expected_failure_of_a_baseline_that_recorded_it(base):
    # A COLLAPSED cell fails its test like a FAIL (verdict.assert_cell): under compare mode it must be an xfail too,
    # not a failed test beside an exit status of 0.
    for outcome in (FAIL, ERROR, COLLAPSED):
        cells = [_cell("Odd", outcome=outcome, mean=0.05)]
        assert f"baseline {outcome}" in bl.expected_failure(bl.build_baseline(RUN, cells, {}), _k("Odd"))
    for outcome in (PASS, INCONCLUSIVE, NA, INFO):
        cells = [_cell("Odd", outcome=outcome)]
        assert bl.expected_failure(bl.build_baseline(RUN, cells, {}), _k("Odd")) is None


@pytest.mark.parametrize(("content", "message"), [
    (None, "No baseline at"),
    ("{not json", "is not valid JSON"),
    ('{"kind": "something else"}', "is not a shortcut-bench baseline"),
    ('{"kind": "shortcut-bench baseline", "schema": 99}', "baseline schema 99"),
    ('{"kind": "shortcut-bench baseline", "schema": 1}', "baseline schema 1"),
    ('{"kind": "shortcut-bench baseline", "schema": 2, "profile": "quick", "seed": "zero", "data": {}, '
     '"cells": {}, "checks": {}}', "'seed' must be a int"),
    ('{"kind": "shortcut-bench baseline", "schema": 2, "profile": "quick", "seed": 0, "data": {}, '
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


def test_an_update_may_add_training_seeds_but_not_replace_them(base, tmp_path):
    path = bl.write_baseline(tmp_path / "b.json", base)
    three = bl.identity({**RUN, "model_seeds": [0, 1, 2]})
    old, note = bl.previous_for_update(path, three)
    assert old is not None and "adds seeds [1, 2]" in note and "pinning the new seeds' models" in note
    with pytest.raises(bl.BaselineError, match="--bench-model-seeds 1"):
        bl.check_identity(base, three, path)  # compare mode still refuses it
    with pytest.raises(bl.BaselineError, match="training seeds \\[1, 2\\]"):
        bl.previous_for_update(path, bl.identity({**RUN, "model_seeds": [1, 2]}))  # seed 0's models are not among them
    two = bl.write_baseline(tmp_path / "two.json", {**base, "model_seeds": [0, 1]})
    assert bl.previous_for_update(two, three)[0] is not None
    with pytest.raises(bl.BaselineError):
        bl.previous_for_update(two, bl.identity({**RUN, "model_seeds": [0, 2, 3]}))


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
    assert "1 new cell(s) or check(s)" in last["changed"]
    # The kept cells of a suite this run did not grade keep its fingerprint, so an unversioned change is still caught.
    assert new["suites"]["noise_stability"] == base["suites"]["noise_stability"]
    path = bl.write_baseline(tmp_path / "b.json", new)
    assert bl.load_baseline(path)["cells"] == new["cells"]
    # Per-sample scores are kept, to 6 significant digits.
    assert len(new["cells"][_k("Brand")]["scores"]) == N
    assert all(len(repr(v).lstrip("-0.").replace(".", "")) <= 6 for v in new["cells"][_k("Brand")]["scores"])


def test_an_update_on_other_weights_drops_the_cells_it_did_not_grade(base):
    pinned = {"biased": {"sha256": "a" * 64}, "control": {"sha256": "b" * 64}}
    old = {**base, "models": pinned}
    same = bl.updated_baseline(old, RUN, [_cell("Brand")], {}, models=pinned)
    assert _k("Unselected") in same["cells"]
    other = bl.updated_baseline(old, RUN, [_cell("Brand")], {}, models={**pinned, "biased": {"sha256": "c" * 64}})
    assert set(other["cells"]) == {_k("Brand")} and "models re-pinned" in other["history"][-1]["changed"][-1]


# --- the statistical rule: a regression is a paired change beyond the tolerance, not a flipped label ----------


def test_a_verdict_that_flips_on_float_noise_is_borderline_not_a_regression(base):
    # The same images on the same pinned model, scored with other float rounding: the verdict moved, the score did not.
    flipped = _cell("Good", outcome=FAIL, mean=0.5 - 1e-5, noise=1e-6)
    change = _status(bl.compare(base, [flipped], {}), _k("Good"))
    assert change.status == bl.BORDERLINE and change.reason.startswith("borderline: verdict moved within tolerance")
    assert not bl.fails([change])
    lines = [text for text, _ in bl.report_lines([change])]
    assert lines and "BORDERLINE" in lines[0] and "PASS → FAIL" in lines[0]


def test_a_move_to_or_from_inconclusive_is_judged_by_the_paired_change_not_the_label(base, tmp_path):
    # Baseline PASS (Good) and FAIL (Bad); this run INCONCLUSIVE on nearly the same scores: borderline, never failing.
    run = [_cell("Good", outcome="INCONCLUSIVE", mean=0.5 - 1e-5, noise=1e-6),
           _cell("Bad", outcome="INCONCLUSIVE", mean=0.05 + 1e-5, noise=1e-6)]
    changes = bl.compare(base, run, {})
    for key, flip in ((_k("Good"), "PASS → INCONCLUSIVE"), (_k("Bad"), "FAIL → INCONCLUSIVE")):
        change = _status(changes, key)
        assert change.status == bl.BORDERLINE and flip in change.reason, change
    assert not bl.fails(changes)
    # Beyond the tolerance the change decides as always: a PASS that drops to INCONCLUSIVE by 0.3 regressed.
    dropped = _status(bl.compare(base, [_cell("Good", outcome="INCONCLUSIVE", mean=0.2)], {}), _k("Good"))
    assert dropped.status == bl.REGRESSED and bl.fails([dropped])
    # A baseline that recorded INCONCLUSIVE loads, marks nothing as an expected failure, and compares the same way.
    recorded = bl.build_baseline(RUN, run, {})
    path = tmp_path / "baseline.json"
    bl.write_baseline(path, {**recorded, "history": []})
    loaded = bl.load_baseline(path)
    v, thr = LOCALISATION.version, standard(LOCALISATION, LOCALISATION.metric("RelevanceMassAccuracy"))
    assert bl.expected_failure(loaded, _k("Good"), v, thr) is None and bl.expected_failure(loaded, _k("Bad"), v, thr) is None
    back = _status(bl.compare(loaded, [_cell("Good", mean=0.5)], {}), _k("Good"))
    assert back.status == bl.BORDERLINE and "INCONCLUSIVE → PASS" in back.reason


def test_a_large_mean_drop_without_statistical_support_is_not_a_regression(base):
    tol = bl.tolerance(LOCALISATION.metric("RelevanceMassAccuracy"))
    # Mean 2 tolerances lower, but the per-image changes scatter far more than that: the CI reaches past -tol.
    noisy = _cell("Drifty", mean=0.5 - 2 * tol, noise=0.4, seed=3)
    change = _status(bl.compare(base, [noisy], {}), _k("Drifty"))
    assert change.status == bl.UNCHANGED, change.reason
    # The same drop, consistent on every image, is supported: a regression.
    assert _status(bl.compare(base, [_cell("Drifty", mean=0.5 - 2 * tol, noise=0.01)], {}), _k("Drifty")).status == bl.REGRESSED


def test_scores_are_paired_by_image_id_not_by_position(base):
    tol = bl.tolerance(LOCALISATION.metric("RelevanceMassAccuracy"))
    cell = _cell("Drifty", mean=0.5)
    # This run graded the same images in reverse order: paired by id they are unchanged ...
    cell.scores = cell.scores[::-1]
    assert _status(bl.compare(base, [cell], {}, samples=list(range(N))[::-1]), _k("Drifty")).status == bl.UNCHANGED
    # ... but paired by position the spread would look like a change (the rule would be wrong).
    assert bl.paired_change(base["cells"][_k("Drifty")], bl._cell_entry(cell), "higher", None, None).high > 0
    # Only the images both runs graded are paired; too few shared images cannot support a change.
    shifted = _cell("Drifty", mean=0.5 - 4 * tol)
    shifted.scores = shifted.scores[:2]
    change = _status(bl.compare(base, [shifted], {}, samples=[0, 1]), _k("Drifty"))
    assert change.status == bl.UNCHANGED and "fewer than 3 images" in change.reason


def test_an_error_where_the_baseline_scored_is_always_a_regression(base):
    for key in ("Good", "Bad"):
        assert _status(bl.compare(base, [_cell(key, outcome=ERROR)], {}), _k(key)).status == bl.REGRESSED
    assert _status(bl.compare(base, [_cell("Crashy", outcome=ERROR)], {}), _k("Crashy")).status == bl.UNCHANGED


def test_comparison_reports_are_written(base, tmp_path):
    changes = bl.compare(base, [_cell("Good", outcome=FAIL, mean=0.1), _cell("Brand")], {})
    md, js = bl.write_comparison(changes, tmp_path, "reports/baseline.json", base, RUN)
    text = md.read_text()
    assert "**1 regressed**" in text and "## Regressed (1)" in text and _k("Good") in text and "## New (1)" in text
    data = json.loads(js.read_text())
    assert data["regressed"] is True and data["counts"]["new"] == 1


def test_baseline_and_compare_commands_work_on_stored_records(tmp_path, capsys):
    from benchmark.__main__ import main
    from benchmark.reporting.report import build_record

    run = {**RUN, "data": {"code_version": "2"}, "weights": _weights(tmp_path)}
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
    # A record graded on retrained (other) weights is refused: its scores describe other models.
    retrained = json.loads(first.read_text())
    retrained["run"]["weights"]["biased"]["sha256"] = "f" * 64
    first.write_text(json.dumps(retrained))
    assert main(["compare", str(first), "--baseline", str(path)]) == 2
    assert "other weights for the biased model" in capsys.readouterr().err


def _weights(folder):
    """run["weights"] for two small seeded CNNs saved under ``folder`` (what the suites record)."""
    import torch

    from benchmark.cache import file_sha256
    from benchmark.models.arch import build_model

    out = {}
    for seed, name in enumerate(("biased", "control")):
        torch.manual_seed(seed)
        path = folder / f"{name}.pt"
        torch.save(build_model("cnn", width=4).state_dict(), path)
        out[name] = {"file": str(path), "sha256": file_sha256(path), "arch": "cnn", "depth": 0, "width": 4, "card": {}}
    return out


def test_collapsed_images_are_stored_as_null_and_never_paired(base):
    # A map that collapsed (None) in either run has no score to pair; the rest are compared as usual.
    cell = _cell("Drifty", mean=0.5)
    cell.scores[:4] = [None] * 4
    entry = bl._cell_entry(cell)
    assert entry["scores"][:4] == [None] * 4 and json.loads(json.dumps(entry))["scores"][0] is None
    change = bl.paired_change(base["cells"][_k("Drifty")], entry, "higher", list(range(N)), list(range(N)))
    assert change.n == N - 4
    assert _status(bl.compare(base, [cell], {}, samples=list(range(N))), _k("Drifty")).status == bl.UNCHANGED
