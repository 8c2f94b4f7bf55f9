"""The seeds x images study (benchmarks/seed_budget.py): its variance components and predicted intervals."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("seed_budget", ROOT / "benchmarks" / "seed_budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _skills(rng, seed_sd: float, image_sd: float, k: int = 40, n: int = 200) -> tuple[list[float], list[int]]:
    means = 0.6 + rng.normal(0, seed_sd, k)
    return [float(v) for m in means for v in rng.normal(m, image_sd, n)], [n] * k


def test_components_recover_the_seed_and_image_variance(study):
    rng = np.random.default_rng(0)
    skills, counts = _skills(rng, seed_sd=0.1, image_sd=0.3)
    mean, within, between, n_bar = study.components(skills, counts)
    assert mean == pytest.approx(0.6, abs=0.05) and n_bar == 200
    assert within == pytest.approx(0.09, rel=0.05) and between == pytest.approx(0.01, rel=0.5)
    # No seed effect: the between-seed component is (close to) zero, never negative.
    _, _, none, _ = study.components(*_skills(rng, seed_sd=0.0, image_sd=0.3))
    assert 0 <= none < 0.002
    # A collapsed image (None) is left out of its seed.
    assert study.components([0.1, None, 0.3, 0.5, 0.7, 0.9], [3, 3])[3] == pytest.approx(2.5)


def test_one_seed_interval_covers_the_recipe_only_without_a_seed_effect(study):
    assert study.one_seed_coverage(100, within=0.09, between=0.0) == pytest.approx(0.95, abs=1e-3)
    assert study.one_seed_coverage(100, within=0.09, between=0.01) < 0.6
    # The t interval widens with the seed effect and narrows with more seeds at the same image budget.
    assert study.half_width(3, 120, 0.09, 0.01) > study.half_width(3, 120, 0.09, 0.0)
    assert study.half_width(4, 90, 0.09, 0.01) < study.half_width(3, 120, 0.09, 0.01)


def test_the_study_refuses_a_one_seed_run(study, tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"run": {"model_seeds": [0]}, "cells": []}))
    assert study.main([str(path)]) == 2
    assert "--bench-model-seeds 3" in capsys.readouterr().err
    assert study.main([str(tmp_path / "missing.json")]) == 2
