"""Training-seed replicates: --bench-model-seeds K trains K seeds of every arm, and cells are judged over seeds, then
images (a t interval on the seeds' means), through the grader, the run record, baselines and sweep merging."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from benchmark.grading.properties import LOCALISATION
from benchmark.regression.baseline import paired_change, score_ids

RMA = LOCALISATION.metric("RelevanceMassAccuracy")


def test_a_cell_pools_every_seeds_images_and_says_so(quick_bench):
    # Two "seeds" holding the same models: the pooled mean is the one seed's, and the cell is judged over seeds.
    from benchmark.grading.grader import Grader, grade_cell
    from benchmark.session import Replicate

    b = dataclasses.replace(quick_bench, replicates=[])  # the first training seed alone
    one = grade_cell(Grader(b), LOCALISATION, RMA, "Saliency")
    twice = dataclasses.replace(b, replicates=[Replicate(0, b.biased, b.control, b.absent),
                                               Replicate(1, b.biased, b.control, b.absent)])
    pooled = grade_cell(Grader(twice), LOCALISATION, RMA, "Saliency")
    # The two seeds share the one seed's image budget: each grades the first half of it.
    half = -(-len(one.scores) // 2)
    assert one.seed_counts == [] and pooled.seed_counts == [half, half]
    assert pooled.scores == one.scores[:half] + one.scores[:half]
    assert pooled.score["mean"] == pytest.approx(float(np.mean(one.scores[:half])))
    assert "over 2 training seeds" in pooled.message and "over 2 training seeds" not in one.message
    assert set(twice.arm_models()) == {"biased", "control", "absent", "biased-seed1", "control-seed1", "absent-seed1"}


def test_training_seeds_share_each_image_budget():
    from benchmark.profiles import PROFILES

    quick, standard = PROFILES["quick"], PROFILES["standard"]
    assert quick.per_seed(1) is quick
    three = quick.per_seed(3)
    # Each seed grades its share, rounded up, so K seeds grade about what one seed did (grading cost ~ images).
    assert three.n_eval == -(-quick.n_eval // 3) and 3 * three.n_eval - quick.n_eval < 3
    assert three.n_map_only == -(-quick.n_map_only // 3)
    # standard keeps 64 model-calling images per seed on its three seeds, and every flipped image of each seed.
    assert standard.per_seed(standard.model_seeds).n_eval == 64 and standard.per_seed(3).n_map_only is None
    assert three.graded(True, 1000) == three.n_map_only and three.graded(True, 50) == 50


def test_baselines_pair_scores_by_seed_and_image():
    samples = {"0": [5, 9, 12], "1": [3, 5, 7]}
    assert score_ids(samples, 4, [2, 2]) == ["0:5", "0:9", "1:3", "1:5"]
    assert score_ids([5, 9, 12], 2, None) == [5, 9]
    assert score_ids(samples, 4, None) is None and score_ids(samples, 5, [2, 2]) is None
    # The other run's seed 1 flipped other cats: only the shared (seed, image) pairs are compared.
    before = {"scores": [0.1 * i for i in range(12)], "seed_counts": [6, 6]}
    after = {"scores": [0.1 * i + 0.05 for i in range(12)], "seed_counts": [6, 6]}
    b_ids = {"0": list(range(6)), "1": list(range(10, 16))}
    a_ids = {"0": list(range(6)), "1": list(range(13, 19))}
    gain = paired_change(before, after, "higher", b_ids, a_ids)
    # Seed 0: six pairs gaining 0.05; seed 1: images 13-15, at positions 3-5 before and 0-2 after (gain -0.25).
    assert gain.n == 9 and gain.mean == pytest.approx((6 * 0.05 - 3 * 0.25) / 9)


def _sweep_record(methods: list[str], shard: str, *, sha: str = "abc") -> dict:
    from benchmark.grading.verdict import judge
    from benchmark.options import MarkLevel
    from benchmark.running.sweep import LevelOutcome, sweep_record

    def cell(m):
        rng = np.random.default_rng(len(m))
        return judge(LOCALISATION, RMA, m, rng.normal(0.9 if m == "Oracle" else 0.1, 0.02, 40), {},
                     None)

    outcome = LevelOutcome(MarkLevel(0.04), 0.039, {"flip_rate": 0.95, "key": "k", "weights_sha256": sha},
                           [cell(m) for m in methods])
    return sweep_record([outcome], {"profile": {"name": "quick"}, "seed": 0, "shard": shard, "git": "g",
                                    "versions": {}, "options": {}, "started": "t", "wall_seconds": 1.0})


def test_sweep_shards_merge_like_the_grid(tmp_path, run_child):
    from benchmark.running.merge import MergeError, merge_sweeps

    merged = merge_sweeps([("a", _sweep_record(["Oracle"], "1/2")), ("b", _sweep_record(["Random"], "2/2"))])
    assert sorted(merged["methods"]) == ["Oracle", "Random"] and len(merged["outcomes"]) == 1
    assert [s["methods"] for s in merged["run"]["shards"]] == [["Oracle"], ["Random"]]
    with pytest.raises(MergeError, match="biased models"):
        merge_sweeps([("a", _sweep_record(["Oracle"], "1/2")), ("b", _sweep_record(["Random"], "2/2", sha="zzz"))])
    # Through the command line: two shard files in, one sweep.json/md/png out; a run.json mixed in is refused.
    paths = []
    for name, rec in (("a", _sweep_record(["Oracle"], "1/2")), ("b", _sweep_record(["Random"], "2/2"))):
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "sweep.json")
        paths[-1].write_text(json.dumps(rec))
    proc = run_child.bench("merge", *paths, "--out", tmp_path / "m", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads((tmp_path / "m" / "sweep.json").read_text())["methods"]) == ["Oracle", "Random"]
    assert (tmp_path / "m" / "sweep.png").is_file()
    (tmp_path / "run.json").write_text(json.dumps({"run": {}, "cells": []}))
    mixed = run_child.bench("merge", paths[0], tmp_path / "run.json", "--out", tmp_path / "x", timeout=300)
    assert mixed.returncode == 2 and "not both" in mixed.stderr and "Traceback" not in mixed.stderr
    assert not (tmp_path / "x").exists()


def test_bad_model_seed_counts_are_usage_errors(tmp_path, run_child):
    for bad, says in (("0", "between 1 and"), ("two", "whole number")):
        proc = run_child.pytest("suites/test_watermark_localisation.py", "-q", "--bench-model-seeds", bad,
                                "--bench-cache-dir", tmp_path, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 4 and says in out and "Traceback" not in out, out[-2000:]
    assert not (tmp_path / "models").exists()


def test_two_model_seeds_end_to_end_with_a_baseline(quick_cache, tmp_path, run_child):
    # Trains seed 1's three arms (about 3 minutes on 2 cores) beside the session's seed 0, grades over both seeds,
    # records a baseline that pins all six arms, and compares against it without training.
    def run(*extra):
        return run_child.pytest("suites/test_watermark_localisation.py", "-q", "--bench-profile", "quick",
                                "--bench-model-seeds", "2", "--bench-methods", "Oracle,Random,Saliency",
                                "--bench-cache-dir", quick_cache, *extra)

    first = run("--bench-reports-dir", str(tmp_path / "r"), "--bench-update-baseline", str(tmp_path / "b.json"))
    out = first.stdout + first.stderr
    assert first.returncode in (0, 1) and "Traceback" not in out, out[-4000:]
    html = (tmp_path / "r" / "index.html").read_text()
    assert "biased-seed1 model" in html and "t interval on the seeds" in html  # model cards of both seeds
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    run_info = record["run"]
    assert run_info["model_seeds"] == [0, 1] and set(run_info["samples"]) == {"0", "1"}
    assert run_info["samples"]["0"] != run_info["samples"]["1"]  # each seed's model flips its own cats
    cells = [c for c in record["cells"] if c["outcome"] != "N/A"]
    assert cells and all(len(c["seed_counts"]) == 2 for c in cells)
    assert "t interval on the seeds' means" in (tmp_path / "r" / "leaderboard.md").read_text()
    baseline = json.loads((tmp_path / "b.json").read_text())
    assert baseline["model_seeds"] == [0, 1] and {"biased-seed1", "absent-seed1"} <= set(baseline["models"])
    again = run("--bench-reports-dir", str(tmp_path / "c"), "--bench-compare", str(tmp_path / "b.json"))
    out = again.stdout + again.stderr
    assert again.returncode == 0 and "12 unchanged; no regressions" in out and "Traceback" not in out, out[-4000:]
    # A one-seed run is another world for this baseline: refused with the option that fixes it.
    one = run_child.pytest("suites/test_watermark_localisation.py", "-q", "--bench-profile", "quick", "--bench-methods",
                           "Oracle", "--bench-cache-dir", quick_cache, "--bench-reports-dir", tmp_path / "d",
                           "--bench-compare", tmp_path / "b.json")
    assert one.returncode != 0 and "--bench-model-seeds 2" in one.stdout + one.stderr
