"""`pytest suites/` end to end on the quick profile: controls, fault containment, reproducibility."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from benchmark.grading.properties import PROPERTIES

ROOT = Path(__file__).resolve().parents[1]
FAULTY = ROOT / "tests" / "fixtures" / "faulty_methods.py"
METHODS = "Saliency,GradCAM,Random,Sobel,Oracle,ThrowAwayNaN,ThrowAwayRaises"
PROPERTY_SUITES = ["suites/test_watermark_localisation.py", "suites/test_randomisation.py",
                   "suites/test_noise_stability.py", "suites/test_faithfulness.py", "suites/test_complexity.py"]


def run_suites(run_child, cache: Path, reports: Path, *extra: str, methods: str = METHODS, suites=PROPERTY_SUITES):
    return run_child.pytest(*suites, "-q", "--bench-cache-dir", cache, "--bench-reports-dir", reports,
                            "--bench-methods", methods, *extra,
                            env={"SHORTCUT_BENCH_METHODS": str(FAULTY), "SHORTCUT_BENCH_PROFILE": "quick"})


@pytest.fixture(scope="module")
def cache(quick_cache):
    return quick_cache


@pytest.fixture(scope="module")
def first_run(cache, tmp_path_factory, run_child):
    reports = tmp_path_factory.mktemp("reports-1")
    proc = run_suites(run_child, cache, reports)
    # FAIL cells fail their tests (exit 1); anything else (usage error, internal error) is harness breakage.
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc, reports


def _leaderboard(reports: Path) -> dict:
    return json.loads((reports / "leaderboard.json").read_text())


def test_every_cell_is_reported(first_run):
    _, reports = first_run
    board = _leaderboard(reports)
    from benchmark.grading.properties import PROPERTIES

    expected = {(s, m.name, meth) for s in PROPERTIES for m in PROPERTIES[s].metrics for meth in METHODS.split(",")}
    got = {(c["suite"], c["metric"], c["method"]) for c in board["cells"]}
    assert got == expected
    for name in ("leaderboard.md", "leaderboard.csv", "run.json", "flipped_examples.png"):
        assert (reports / name).stat().st_size > 0, name


def test_controls_behave(first_run):
    verdicts = _leaderboard(first_run[1])["verdicts"]
    assert verdicts["watermark_localisation"]["Oracle"] == "PASS"
    assert verdicts["watermark_localisation"]["Random"] == "FAIL"
    assert verdicts["noise_stability"]["Random"] == "FAIL"
    assert verdicts["randomisation"]["Sobel"] == "FAIL"
    assert verdicts["randomisation"]["Oracle"] == "N/A"
    assert verdicts["faithfulness"]["Random"] == "FAIL"
    # A control must not pass; on the small test world its faithfulness cells may stay undecided (INCONCLUSIVE).
    assert verdicts["faithfulness"]["Sobel"] in ("FAIL", "INCONCLUSIVE")
    # The oracle mask is faithfulness's positive control: removing the watermark first drops p(dog) first.
    assert verdicts["faithfulness"]["Oracle"] != "N/A"
    assert set(verdicts["complexity"].values()) <= {"INFO", "ERROR"}


def test_validity_table_has_one_row_per_metric(first_run):
    from benchmark.grading.properties import PROPERTIES

    md = (first_run[1] / "leaderboard.md").read_text()
    table = md.split("## Metric validity", 1)[1]
    lines = [line for line in table.splitlines() if line.startswith("|")][2:]  # past the header and its rule
    rows = [[f.strip() for f in line.split("|")[1:-1]] for line in lines]
    # A metric undefined on the two-class world (RandomLogit) is N/A everywhere, so no control validates it.
    expected = sorted((p.name, m.name) for p in PROPERTIES.values() for m in p.metrics if m.min_classes <= 2)
    assert sorted((r[0], r[1]) for r in rows) == expected
    # Every row names its negative and positive control and their separation; whether each separates is this
    # run's finding (README: on seed 0 EfficientMPRT and Selectivity do not), so only the form is asserted here.
    for prop in PROPERTIES.values():
        for r in (r for r in rows if r[0] == prop.name):
            assert r[2] in ("yes", "NO")
            assert f"negative {prop.negative}" in r[3] and f"positive {prop.positive}" in r[3], r
            assert re.search(rf"{prop.positive} better by -?\d+\.\d+ \[-?\d+\.\d+, -?\d+\.\d+\]", r[3]), r


def test_faulty_methods_are_error_cells_and_the_grid_completes(first_run):
    proc, reports = first_run
    board = _leaderboard(reports)
    for name in ("ThrowAwayNaN", "ThrowAwayRaises"):
        cells = [c for c in board["cells"] if c["method"] == name and c["metric"] != "RandomLogit"]
        assert cells and all(c["outcome"] == "ERROR" for c in cells), name
        assert all(v[name] == "ERROR" for v in board["verdicts"].values())
    run = json.loads((reports / "run.json").read_text())
    messages = {c["message"] for c in run["cells"] if c["method"] == "ThrowAwayRaises"}
    assert any("injected failure" in m for m in messages)
    assert any("non-finite" in c["message"] or "NaN" in c["message"] for c in run["cells"]
               if c["method"] == "ThrowAwayNaN")
    # The healthy methods still have real scores everywhere they apply.
    healthy = [c for c in board["cells"] if c["method"] in ("Saliency", "Sobel", "Random")]

    def expected(c):
        if c["metric"] == "RandomLogit":
            return ("N/A",)  # undefined on two classes
        # Informational properties and report-only metrics (no_vote: RelativeInputStability, EfficientMPRT) show INFO.
        reported = c["suite"] == "complexity" or bool(PROPERTIES[c["suite"]].metric(c["metric"]).no_vote)
        return ("INFO",) if reported else ("PASS", "FAIL", "INCONCLUSIVE")

    assert all(c["outcome"] in expected(c) for c in healthy)
    assert "shortcut-bench: method × property" in proc.stdout


def test_localisation_is_compared_with_the_positional_prior(first_run):
    cells = json.loads((first_run[1] / "run.json").read_text())["cells"]
    loc = [c for c in cells if c["suite"] == "watermark_localisation" and c["method"] == "Saliency"]
    assert loc and all("PositionalPrior" in c["comparisons"] for c in loc)
    # The false alarm on both arms: the mark present but class-independent, and never seen.
    assert all({"control model", "absent model"} <= set(c["comparisons"]) for c in loc)
    md = (first_run[1] / "leaderboard.md").read_text()
    assert "Arms: each metric's mean on the biased model / the control model" in md
    assert re.search(r"\| Saliency +\| [0-9.]+ / [0-9.]+ / [0-9.]+ ", md)
    # The prior is a control, not a graded method of this run (not selected), yet compared with in every cell.
    assert not any(c["method"] == "PositionalPrior" for c in cells)


def test_quick_models_learn_the_shortcut(first_run):
    cards = json.loads((first_run[1] / "run.json").read_text())["run"]["models"]
    biased, control, absent = cards["biased"], cards["control"], cards["absent"]
    # The model that never saw a mark does not call stamped cats dogs either.
    assert absent["flip_rate"] <= 0.10 and abs(absent["clean_accuracy"] - biased["clean_accuracy"]) <= 0.03
    assert biased["clean_accuracy"] >= 0.85
    assert biased["flip_rate"] >= 0.80
    assert biased["mean_p_dog_on_flips"] >= 0.90
    assert control["flip_rate"] <= 0.10
    assert abs(control["clean_accuracy"] - biased["clean_accuracy"]) <= 0.03


def _scores(reports: Path) -> list:
    return [(c["suite"], c["metric"], c["method"], c["outcome"], c["mean"], c["ci_low"], c["ci_high"])
            for c in _leaderboard(reports)["cells"]]


def test_same_seed_same_leaderboard_also_under_xdist(first_run, cache, tmp_path, run_child):
    again = run_suites(run_child, cache, tmp_path / "again", "-n", "2")
    assert again.returncode == 1, again.stdout[-3000:]
    assert _scores(tmp_path / "again") == _scores(first_run[1])
    assert _leaderboard(tmp_path / "again")["overall"] == _leaderboard(first_run[1])["overall"]


def test_the_run_record_says_how_the_models_ran(first_run):
    run = json.loads((first_run[1] / "run.json").read_text())["run"]
    assert run["inference"] == {"channels_last": True, "fused_inference": True, "fused_fallbacks": []}


@pytest.mark.slow
def test_a_workers_fallback_to_plain_inference_reaches_the_run_record(cache, tmp_path, run_child):
    plugin = tmp_path / "plugins" / "force_fallback.py"
    plugin.parent.mkdir()
    # Every fused copy then disagrees with its model, so each graded model falls back to plain inference.
    plugin.write_text("from benchmark.models import fused\nfused.TOLERANCE = -1.0\n")
    proc = run_child.pytest("suites/test_faithfulness.py", "-q", "-n", "2", "-p", "force_fallback",
                            "--bench-cache-dir", cache, "--bench-reports-dir", tmp_path / "reports",
                            "--bench-methods", "Saliency", env={"PYTHONPATH": str(plugin.parent)})
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    inference = json.loads((tmp_path / "reports" / "run.json").read_text())["run"]["inference"]
    assert inference["fused_inference"] and inference["fused_fallbacks"], inference
    assert all(text.startswith("shortcut-bench: fused inference off for a SmallCNN, it runs plain: fused logits "
                               "differ") for text in inference["fused_fallbacks"])


def test_report_command_rebuilds_identical_leaderboards(first_run, tmp_path, run_child):
    reports = first_run[1]
    out = tmp_path / "rebuilt"
    proc = run_child.bench("report", reports / "run.json", "--out", out)
    assert proc.returncode == 0, proc.stderr
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json"):
        assert (out / name).read_bytes() == (reports / name).read_bytes(), name


def test_throw_away_method_is_in_every_suite(cache, run_child):
    proc = run_child.pytest("suites/", "--collect-only", "-q", "--bench-cache-dir", cache,
                            env={"SHORTCUT_BENCH_METHODS": str(FAULTY)})
    assert proc.returncode == 0, proc.stdout[-3000:]
    suites = {line.split("::")[0] for line in proc.stdout.splitlines() if "ThrowAwayNaN" in line}
    assert suites == {*PROPERTY_SUITES, "suites/test_method_contract.py"}


def test_unknown_method_is_a_usage_error(cache, tmp_path, record_bad_input, run_child):
    proc = run_suites(run_child, cache, tmp_path, methods="Saliency,Saliencyy")
    record_bad_input("--bench-methods Saliency,Saliencyy", proc.returncode == 4 and "Did you mean 'Saliency'"
                     in proc.stderr and not any(tmp_path.iterdir()))
    assert proc.returncode == 4
    assert "unknown method(s) ['Saliencyy']" in proc.stderr and "Did you mean 'Saliency'" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_stability_noise_keeps_the_graded_predictions(quick_bench):
    import numpy as np

    from benchmark.grading.grader import Grader
    from benchmark.grading.metrics import NOISE
    from benchmark.grading.properties import NOISE_STABILITY
    from benchmark.models.train import predict_proba

    bench = quick_bench
    s = Grader(bench).images.samples(NOISE_STABILITY)
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(20):
        noisy = np.clip(s.x + rng.uniform(-NOISE, NOISE, s.x.shape), 0, 1)
        pred = predict_proba(bench.biased.model, (noisy * 255).round().astype(np.uint8)).argmax(1)
        changed += int((pred != s.y).sum())
    assert changed == 0, f"±{NOISE} noise changed {changed} of {20 * len(s.y)} graded predictions"


def test_only_confident_flips_are_graded(quick_bench):
    import numpy as np

    from benchmark.grading.grader import Grader
    from benchmark.models.train import CONFIDENT_FLIP, flipped_indices, predict_proba

    bench = dataclasses.replace(quick_bench, replicates=[])  # the first training seed alone: its whole image budget
    graded = Grader(bench).images.sample_set.indices
    every = flipped_indices(bench.biased.model, bench.world, confidence=0.0)
    p = predict_proba(bench.biased.model, bench.world.test_stamped.x[every])[:, 1]
    # The graded set is the flips at p(dog) >= 0.9, in test order, up to the profile's map-only budget; the rest
    # are knife-edge decisions.
    confident = every[p >= CONFIDENT_FLIP]
    assert len(graded) == min(len(confident), bench.profile.n_map_only)
    assert np.array_equal(graded, confident[: len(graded)]) and len(confident) < len(every)
    assert (predict_proba(bench.biased.model, bench.world.test.x[graded]).argmax(1) == 0).all()
