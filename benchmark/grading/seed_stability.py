"""Verdict stability over training seeds: each cell re-judged on every seed alone and on every leave-one-seed-out
subset, and each method's property verdict over those re-judged cells."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from benchmark.grading.properties import MetricSpec, Property
from benchmark.grading.stats import supports_positive
from benchmark.grading.verdict import (
    COLLAPSED,
    ERROR,
    INFO,
    PASS,
    Anchors,
    Cell,
    check_scores,
    collapse_mask,
    collapses,
    judge_pass_level,
    property_verdict,
    skill_scores,
    three_way,
)


def seed_masks(groups) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(one mask per seed selecting its images, one per seed selecting every other seed's), seeds in order of first
    appearance; both empty for one seed or none."""
    if groups is None:
        return [], []
    g = np.asarray(groups).ravel()
    _, first = np.unique(g, return_index=True)
    labels = g[np.sort(first)]
    if labels.size < 2:
        return [], []
    alone = [g == label for label in labels]
    return alone, [~m for m in alone]


def _subset(scores: np.ndarray, controls: dict[str, np.ndarray], anchors: Anchors | None, mask: np.ndarray):
    """(scores, control score arrays, anchors) on the images ``mask`` selects."""
    sub = None if anchors is None else Anchors(anchors.negative, anchors.positive,
                                               np.asarray(anchors.neg, dtype=np.float64).ravel()[mask],
                                               np.asarray(anchors.pos, dtype=np.float64).ravel()[mask])
    return scores[mask], [np.asarray(c, dtype=np.float64).ravel()[mask] for c in controls.values()], sub


def _decided(prop: Property, metric: MetricSpec, method: str, s: np.ndarray, controls: list[np.ndarray],
             anchors: Anchors | None, seed: int, g: np.ndarray) -> str:
    """:func:`judge`'s outcome (its collapse rule, then :func:`decide`) from only what decides it: each control's
    paired difference and the pass level. The CIs and p-values judge reports besides cost twice as many bootstraps
    and no outcome depends on them (tests/test_seed_stability.py checks the outcomes agree)."""
    if prop.informational or metric.no_vote:
        return INFO
    gone = collapse_mask(metric, s, controls + ([] if anchors is None else [anchors.neg, anchors.pos]))
    if collapses(s, gone):
        return COLLAPSED
    keep = ~gone
    s, g = check_scores(s[keep], method), g[keep]
    if anchors is not None and not keep.all():
        anchors = Anchors(anchors.negative, anchors.positive, anchors.neg[keep], anchors.pos[keep])
    beaten, lost = [], []
    for c in controls:
        if c.size != keep.size:
            raise ValueError(f"a control has {c.size} scores for {keep.size} samples")
        oriented = metric.sign * (s - check_scores(c[keep], "control"))
        beaten.append(supports_positive(oriented, seed=seed, groups=g)[0])
        lost.append(not beaten[-1] and supports_positive(-oriented, seed=seed, groups=g)[0])
    level = judge_pass_level(prop, metric, s, anchors, None if anchors is None else skill_scores(metric, s, anchors),
                             seed, g)
    return three_way(level.meets, all(beaten), level.below, any(lost))


def _outcome(prop: Property, metric: MetricSpec, method: str, scores: np.ndarray, controls: dict[str, np.ndarray],
             anchors: Anchors | None, mask: np.ndarray, seed: int, groups: np.ndarray) -> str:
    """The outcome :func:`judge` gives on the images ``mask`` selects (one seed: the bootstrap over its images; two or
    more: the t interval on their means); ERROR when the subset cannot be judged."""
    try:
        return _decided(prop, metric, method, *_subset(scores, controls, anchors, mask), seed, groups[mask])
    except Exception:  # a subset the full run could judge but this one cannot: no verdict, as judge's caller would give
        return ERROR


def seed_outcomes(prop: Property, metric: MetricSpec, method: str, scores, controls: dict[str, np.ndarray],
                  anchors: Anchors | None = None, *, seed: int = 0, groups=None) -> tuple[list[str], list[str]]:
    """(the cell's outcome on each training seed alone, its outcome leaving each seed out), for what :func:`judge`
    got; both empty for one seed. With two seeds, leaving one out is the other alone, so it is not judged twice."""
    alone, loso = seed_masks(groups)
    if not alone:
        return [], []
    s, g = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(groups).ravel()
    per_seed = [_outcome(prop, metric, method, s, controls, anchors, m, seed, g) for m in alone]
    if len(alone) == 2:
        return per_seed, per_seed[::-1]
    return per_seed, [_outcome(prop, metric, method, s, controls, anchors, m, seed, g) for m in loso]


def _as(cells: list[Cell], outcomes: list[str]) -> list[Cell]:
    # The cells with another outcome each; which metrics vote (informative, votes) stays the full run's, so a change
    # in the verdict comes from the method's outcomes on the seeds, not from a metric's validity on fewer images.
    return [replace(c, outcome=o) for c, o in zip(cells, outcomes)]


def property_stability(cells: list[Cell]) -> dict:
    """One method's stability on one property: {"seeds": K} for one seed (or cells graded before stability was
    recorded); else also "seeds_pass", how many seeds' own property verdicts are PASS, and "loso_agree", how many of
    the K leave-one-seed-out verdicts equal the full run's. Every verdict here, the full run's included, is the
    majority rule without the Benjamini-Hochberg step: that step adjusts over the run's cells, and a subset's
    p-values are not kept, so agreement measures the seeds alone."""
    k = max((len(c.seed_counts) for c in cells), default=0)
    if k < 2:
        return {"seeds": 1}
    # N/A and ERROR cells carry no lists: they keep their outcome on every subset.
    rows = [c.seed_outcomes if len(c.seed_outcomes) == k else [c.outcome] * k for c in cells]
    loso_rows = [c.loso_outcomes if len(c.loso_outcomes) == k else [c.outcome] * k for c in cells]
    if not any(c.seed_outcomes for c in cells):
        return {"seeds": k}
    full = property_verdict(cells)
    alone = [property_verdict(_as(cells, [r[i] for r in rows])) for i in range(k)]
    left_out = [property_verdict(_as(cells, [r[i] for r in loso_rows])) for i in range(k)]
    return {"seeds": k, "seeds_pass": sum(v == PASS for v in alone), "loso_agree": sum(v == full for v in left_out)}


def stability(cells: list[Cell]) -> dict[str, dict[str, dict]]:
    """Per property (suite) and method, :func:`property_stability` of the method's cells on it."""
    by: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        by.setdefault((c.suite, c.method), []).append(c)
    out: dict[str, dict[str, dict]] = {}
    for (suite, method), group in sorted(by.items()):
        out.setdefault(suite, {})[method] = property_stability(group)
    return out
