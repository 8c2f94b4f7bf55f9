"""Redundancy checks on every grid: metrics of a property that measure the same thing, methods that score the same."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmark.grading.properties import PROPERTIES
from benchmark.grading.verdict import Cell

RANK_CORRELATION = 0.98  # per-method means of two metrics ranked this alike: one measurement twice
EQUAL = 1e-6  # two metrics' means this close are the same number
# Two methods' per-image scores this close (absolute + relative) are the same up to the 6 digits a record keeps.
SAME_SCORE = 1e-5
# Share of a cell's images on which they must be that close: on hundreds of images one near-tie (a map that is
# almost flat) can round apart without the maps differing.
SAME_IMAGES = 0.99
# Share of shared cells on which two methods must agree to be flagged: metrics that add noise (ROAD's imputation)
# or divide by tiny input changes (RelativeInputStability) amplify float differences of equal maps.
SAME_SHARE = 0.75


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr  # lazy: ~0.45 s (measured); `benchmark list methods` loads this module

    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def metric_pairs(cells: list[Cell]) -> list[dict]:
    """Every pair of voting metrics in each property: Spearman correlation of their per-method means (methods
    scored by both; each signed so that higher is better), whether they are equal within 1e-6 for most methods,
    and whether that flags them redundant."""
    means: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for c in cells:
        if c.votes and c.score is not None and c.outcome not in ("ERROR", "N/A"):
            # Signed so that higher is better: a lower-is-better metric that mirrors another ranks alike.
            sign = 1.0 if c.direction == "higher" else -1.0
            means[(c.suite, c.metric)][c.method] = sign * float(c.score["mean"])
    out = []
    for key, prop in PROPERTIES.items():
        names = [m.name for m in prop.metrics if (key, m.name) in means]
        for a, b in combinations(names, 2):
            shared = sorted(set(means[(key, a)]) & set(means[(key, b)]))
            if len(shared) < 3:
                continue
            x = np.array([means[(key, a)][m] for m in shared])
            y = np.array([means[(key, b)][m] for m in shared])
            rho = _spearman(x, y)
            equal = int(np.sum(np.abs(x - y) <= EQUAL))
            flagged = bool((np.isfinite(rho) and rho >= RANK_CORRELATION) or equal * 2 > len(shared))
            out.append({"suite": key, "property": prop.name, "a": a, "b": b, "n_methods": len(shared),
                        "spearman": rho, "equal_methods": equal, "redundant": flagged})
    return out


def identical_methods(cells: list[Cell]) -> list[dict]:
    """Pairs of methods whose per-image scores agree (within 1e-5, absolute and relative, on at least 99% of the
    images) on at least 3/4 of the metric cells both were scored on: on this model they very likely compute the
    same maps (e.g. ε-LRP and Gradient×Input on a ReLU network)."""
    scores: dict[str, dict[tuple[str, str], np.ndarray]] = defaultdict(dict)
    for c in cells:
        if c.scores:
            # A collapsed image (None) agrees with nothing: NaN never compares close.
            scores[c.method][(c.suite, c.metric)] = np.array([np.nan if v is None else v for v in c.scores],
                                                             dtype=np.float64)
    out = []
    for a, b in combinations(sorted(scores), 2):
        shared = sorted(set(scores[a]) & set(scores[b]))
        if len(shared) < 2:
            continue
        agree = sum(scores[a][k].shape == scores[b][k].shape
                    and float(np.mean(np.isclose(scores[a][k], scores[b][k], rtol=SAME_SCORE, atol=SAME_SCORE)))
                    >= SAME_IMAGES for k in shared)
        if agree >= SAME_SHARE * len(shared):
            out.append({"a": a, "b": b, "agree": agree, "cells": len(shared)})
    return out


def equivalents_in_baseline(path) -> tuple[dict[str, list[str]], str]:
    """{method: ["Other (agree/cells)", ...]} of the methods a baseline file found to compute the same maps, and a
    line saying where that came from; empty when there is no readable baseline at ``path``."""
    path = Path(path)
    try:
        baseline = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, ""
    same: dict[str, list[str]] = {}
    for p in identical_in_baseline(baseline):
        same.setdefault(p["a"], []).append(f"{p['b']} ({p['agree']}/{p['cells']})")
        same.setdefault(p["b"], []).append(f"{p['a']} ({p['agree']}/{p['cells']})")
    return same, (f"same maps as: per-image scores equal on most metrics in {path} (profile "
                  f"{baseline.get('profile')}, seed {baseline.get('seed')}; equal metrics/shared metrics)")


def identical_in_baseline(baseline: dict) -> list[dict]:
    """:func:`identical_methods` on the per-image scores a baseline recorded (no run needed)."""
    cells = []
    for key, entry in (baseline.get("cells") or {}).items():
        suite, metric, method = key.split("::")
        cells.append(SimpleNamespace(suite=suite, metric=metric, method=method, scores=entry.get("scores") or []))
    return identical_methods(cells)
