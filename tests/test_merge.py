"""Shards split methods deterministically; merging shard records gives the unsharded leaderboard or refuses."""

from __future__ import annotations

import copy
import json

import pytest

from benchmark.errors import ConfigError
from benchmark.grading.properties import PROPERTIES
from benchmark.grading.verdict import FAIL, PASS, Cell
from benchmark.reporting.report import build_record, write_reports
from benchmark.running.merge import MergeError, merge_records, missing_shards, parse_shard, shard

RUN = {"profile": {"name": "quick", "n_eval": 16}, "seed": 0, "git": "abc", "device": "cpu",
       "options": {"data_source": "procedural", "data_root": None}, "versions": {"torch": "2"},
       "models": {"biased": {"key": "k1", "weights_sha256": "w1", "train_seconds": 3.0}},
       "started": "2026-01-01T00:00:00Z", "wall_seconds": 10.0}
METHODS = ["Saliency", "GradCAM", "Random", "Sobel", "Oracle"]


def _cell(method, metric, outcome, mean):
    prop = PROPERTIES["watermark_localisation"]
    m = prop.metric(metric)
    return Cell(suite=prop.key, suite_version=prop.version, property=prop.name, metric=metric, method=method,
                direction=m.direction, threshold=m.threshold, outcome=outcome, message=f"{method} {outcome}",
                score={"mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1, "n": 8}, informative=True)


def _cells(methods):
    return [_cell(m, metric, PASS if m in ("Saliency", "Oracle") else FAIL, mean=0.1 + 0.1 * i)
            for i, m in enumerate(methods) for metric in ("RelevanceMassAccuracy", "AUC")]


def _shards(n=2):
    out = []
    for i in range(1, n + 1):
        run = {**copy.deepcopy(RUN), "shard": f"{i}/{n}", "wall_seconds": 5.0 + i}
        out.append((f"shard{i}/run.json", build_record([c for c in _cells(METHODS)
                                                         if c.method in shard(METHODS, f"{i}/{n}")], run)))
    return out


def test_shards_partition_the_methods_deterministically():
    parts = [shard(METHODS, f"{i}/3") for i in (1, 2, 3)]
    assert sorted(m for p in parts for m in p) == sorted(METHODS)
    assert parts == [shard(list(reversed(METHODS)), f"{i}/3") for i in (1, 2, 3)]  # order of the input is irrelevant
    assert shard(METHODS, "1/1") == sorted(METHODS)


@pytest.mark.parametrize("spec", ["0/2", "3/2", "1-2", "a/b", "2"])
def test_bad_shard_specs_are_refused(spec):
    with pytest.raises(ConfigError, match="I/N"):
        parse_shard(spec)


def test_merged_shards_give_the_unsharded_leaderboards(tmp_path):
    merged = merge_records(_shards())
    whole = build_record(_cells(METHODS), RUN)
    a = write_reports(merged, tmp_path / "merged")
    b = write_reports(whole, tmp_path / "whole")
    for pa, pb in zip(a, b):
        if pa.name != "run.json":
            assert pa.read_bytes() == pb.read_bytes(), pa.name
    assert [s["shard"] for s in merged["run"]["shards"]] == ["1/2", "2/2"]
    assert merged["run"]["wall_seconds"] == 7.0 and "shard" not in merged["run"]
    assert missing_shards(_shards()) == [] and missing_shards(_shards()[:1]) == ["2/2"]


def test_duplicate_cells_must_agree():
    one, two = _shards()
    agreeing = (two[0], {**two[1], "cells": two[1]["cells"] + one[1]["cells"][:1]})
    assert len(merge_records([one, agreeing])["cells"]) == len(_cells(METHODS))
    bad = copy.deepcopy(one[1]["cells"][0])
    bad["outcome"] = "ERROR"
    with pytest.raises(MergeError, match="graded differently"):
        merge_records([one, (two[0], {**two[1], "cells": two[1]["cells"] + [bad]})])


@pytest.mark.parametrize(("field", "value", "what"), [
    ("profile", {"name": "standard"}, "profile"), ("seed", 1, "seed"), ("git", "other", "code version"),
    ("versions", {"torch": "3"}, "package versions"),
    ("models", {"biased": {"key": "k1", "weights_sha256": "other"}}, "trained models"),
    ("weights", {"contract-resnet-biased": {"sha256": "other"}}, "graded weights"),
    ("samples", [3, 1, 2], "graded images"),
    ("inference", {"channels_last": False, "fused_inference": True, "fused_fallbacks": []}, "inference path"),
])
def test_shards_of_different_runs_are_refused(field, value, what):
    one, two = _shards()
    two[1]["run"][field] = value
    with pytest.raises(MergeError, match=f"differ in {what}"):
        merge_records([one, two])


def test_merged_shards_keep_every_shards_fused_fallbacks():
    one, two = _shards()
    for (_, record), fallbacks in ((one, ["a"]), (two, ["b", "a"])):
        record["run"]["inference"] = {"channels_last": True, "fused_inference": True, "fused_fallbacks": fallbacks}
    assert merge_records([one, two])["run"]["inference"]["fused_fallbacks"] == ["a", "b"]


def test_different_suite_versions_or_thresholds_are_refused():
    one, two = _shards()
    for c in two[1]["cells"]:
        c["suite_version"] = "99"
    with pytest.raises(MergeError, match=r"v99 in shard2/run.json but v\d"):
        merge_records([one, two])
    one, two = _shards()
    for c in two[1]["cells"]:
        c["standard"] = "fixed threshold 0.9"
    with pytest.raises(MergeError, match="--bench-threshold"):
        merge_records([one, two])


def test_merge_command_refuses_without_writing(tmp_path, run_child):
    (one_name, one), (_, two) = _shards()
    two["run"]["seed"] = 3
    paths = []
    for i, rec in enumerate((one, two)):
        p = tmp_path / f"s{i}" / "run.json"
        p.parent.mkdir()
        p.write_text(json.dumps(rec))
        paths.append(str(p))
    out = tmp_path / "merged"
    proc = run_child.bench("merge", *paths, "--out", out)
    assert proc.returncode == 2 and "differ in seed (3 vs 0)" in proc.stderr, proc.stderr
    assert not out.exists()
    (tmp_path / "s1" / "run.json").write_text("{broken")
    proc = run_child.bench("merge", *paths, "--out", out)
    assert proc.returncode == 2 and "is not valid JSON" in proc.stderr and not out.exists()
