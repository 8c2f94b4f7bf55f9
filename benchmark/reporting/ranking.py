"""Effect sizes and ranks of methods from graded cells: per property and overall, with their CIs.

The leaderboards (:mod:`benchmark.reporting.report`, :mod:`benchmark.reporting.html`), the terminal summary and the strength sweep all
rank from here.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import numpy as np

from benchmark.grading.properties import PROPERTIES
from benchmark.grading.stats import Interval, groups_of, studentized_mean
from benchmark.grading.verdict import (
    COLLAPSED,
    ERROR,
    INCONCLUSIVE,
    NA,
    PASS,
    UNDECIDED,
    Cell,
    fdr_survivors,
    property_verdict,
)
from benchmark.methods import all_methods, discover

RANKING = (
    "Ranks come from effect sizes, not names: a method's effect on a property is its skill (0 = the property's "
    "negative control, 1 = its positive control, measured in this run) averaged over its informative voting metrics "
    "image by image, with a studentised-bootstrap 95% CI. Its rank is 1 + the number of methods whose whole CI lies "
    "above its own, so methods share a rank (shown '=k') only when no CI separates them. The overall rank is the "
    "localisation rank: the effect on the flipped predictions, where the planted mark is the known cause, is the one "
    "thing this benchmark can check against ground truth, so it alone orders the methods, and the overall table's "
    "effect is that localisation effect. Within a shared rank, rows are ordered by the detection limit when a "
    "strength sweep ran (the weaker the smallest mark a method still finds, the higher; 'none' and unswept last), "
    "then by mean effect: the limit orders only what the CI cannot, since it is one level with no CI of its own and "
    "moves between builds more than the effect does. The other properties are pass/fail gates shown beside the rank, "
    "never averaged into it; a method with no localisation effect (N/A, ERROR, or no skill) is unranked ('—'), and "
    "so are the controls (constructed maps that anchor the scale), listed after the ranked methods. "
    "Verdicts do not enter the rank: 'properties passed' counts PASS verdicts only, with the inconclusive ones "
    "named beside it."
)
RANKED_BY = "watermark_localisation"  # the property whose effect orders the overall ranking (see RANKING)


def _mean_per_image(rows: list[tuple[list, list[int]]]) -> tuple[np.ndarray, list[int]] | None:
    # rows: (per-image values, images per training seed; [] for one seed). Every metric grades the same images in the
    # same order; where counts differ, their common prefix (per seed). An image left out of a metric (None: its map
    # collapsed) is averaged over the other metrics; one left out of all, dropped. Returns the means and, with several
    # seeds, how many of them each seed has.
    if not rows:
        return None
    counts = [list(c or []) for _, c in rows]
    if any(counts):
        if any(len(c) != len(counts[0]) for c in counts):
            raise ValueError("cells graded on different numbers of training seeds cannot be averaged image by image")
        per_seed = [min(c[k] for c in counts) for k in range(len(counts[0]))]
        aligned = []
        for (r, _), c in zip(rows, counts):
            starts = np.cumsum([0, *c[:-1]])
            aligned.append([v for k, st in enumerate(starts) for v in r[st: st + per_seed[k]]])
    else:
        n = min(len(r) for r, _ in rows)
        per_seed, aligned = [], [r[:n] for r, _ in rows]
    grid = np.array([[np.nan if v is None else v for v in r] for r in aligned], dtype=np.float64)
    seen = np.isfinite(grid).any(axis=0)
    if not seen.any():
        return None
    kept = [int(seen[st: st + n].sum()) for st, n in zip(np.cumsum([0, *per_seed[:-1]]), per_seed)]
    return np.nanmean(grid[:, seen], axis=0), kept


def _per_image(cells: list[Cell]) -> tuple[np.ndarray, list[int]] | None:
    if any(c.decides and c.outcome == ERROR for c in cells):
        return None
    return _mean_per_image([(c.skills, c.seed_counts) for c in cells
                            if c.decides and c.skills and c.outcome != COLLAPSED])


def effect(cells: list[Cell], *, seed: int = 0) -> Interval | None:
    """A method's effect size on one property: its per-image skill averaged over the deciding cells, with its CI
    (over training seeds, then images, when the run has several seeds)."""
    v = _per_image(cells)
    return None if v is None else _effect_of(v[0].tobytes(), tuple(v[1]), seed)


@functools.lru_cache(maxsize=4096)
def _effect_of(values: bytes, counts: tuple[int, ...], seed: int) -> Interval:
    # By content: one run's reports summarise the same cells several times (markdown, JSON, HTML, the terminal), and
    # each interval is a bootstrap.
    return studentized_mean(np.frombuffer(values, dtype=np.float64), seed=seed, groups=groups_of(list(counts)))


def dominance_ranks(effects: dict[str, Interval | None]) -> dict[str, int | None]:
    """1 + the number of methods whose CI lies wholly above each method's CI; None when a method has no effect.

    Two methods share a rank only if their CIs overlap: if A's CI lay above B's, every method above A would be
    above B too, and A itself, so B's rank would be larger.
    """
    scored = {m: e for m, e in effects.items() if e is not None}
    ranks: dict[str, int | None] = {m: 1 + sum(o.low > e.high for o in scored.values()) for m, e in scored.items()}
    return {m: ranks.get(m) for m in effects}


def rank_labels(ranks: dict[str, int | None]) -> dict[str, str]:
    """'3' for a rank held by one method, '=3' for a shared one, '—' for an unranked method."""
    counts = defaultdict(int)
    for r in ranks.values():
        counts[r] += 1
    return {m: "—" if r is None else f"={r}" if counts[r] > 1 else str(r) for m, r in ranks.items()}


def _order(effects: dict[str, Interval | None], ranks: dict[str, int | None],
           limits: dict[str, float | None] | None = None) -> list[str]:
    # By rank, then detection limit (the smaller mark area first; none or unswept last), then mean effect; the name
    # breaks only exact ties (methods with identical scores).
    big, limits = len(ranks) + 1, limits or {}
    return sorted(ranks, key=lambda m: (big if ranks[m] is None else ranks[m],
                                        float("inf") if limits.get(m) is None else limits[m],
                                        0.0 if effects[m] is None else -effects[m].mean, m))


def detection_areas(sweep: dict | None) -> dict[str, float | None]:
    """Each swept method's detection limit as the mark's area (None: swept, no limit); {} without a sweep."""
    if not sweep:
        return {}
    area = {lv["label"]: lv["area"] for lv in sweep.get("levels") or []}
    return {m: area.get(label) for m, label in (sweep.get("detection_limits") or {}).items()}


def _overall_row(m: str, suites: list[str], verdicts: dict, effect: Interval | None) -> dict:
    """A method's row of the overall table: its property verdicts, how many it passed, and its ranking effect."""
    # Informational properties (complexity) show their scores but never count as passed or applicable.
    applicable = [s for s in suites if verdicts[s].get(m, NA) != NA and not PROPERTIES[s].informational]
    return {"method": m, "passed": sum(verdicts[s].get(m) == PASS for s in suites),
            "inconclusive": sum(verdicts[s].get(m) == INCONCLUSIVE for s in suites), "applicable": len(applicable),
            "errors": sum(verdicts[s].get(m) == ERROR for s in suites),
            "effect": None if effect is None else effect.as_dict(), **{s: verdicts[s].get(m, NA) for s in suites}}


def summarise(cells: list[Cell], limits: dict[str, float | None] | None = None) -> dict:
    """Per-property verdicts, effect sizes and ranks, and the overall ranking of methods (by localisation effect,
    then ``limits``: each swept method's detection limit as an area, see :func:`detection_areas`)."""
    by = defaultdict(list)
    for c in cells:
        by[(c.suite, c.method)].append(c)
    methods = sorted({c.method for c in cells})
    suites = [k for k in PROPERTIES if any(c.suite == k for c in cells)]
    survivors, fdr = fdr_survivors(cells)
    verdicts = {s: {m: property_verdict(by[(s, m)], survivors) for m in methods if (s, m) in by} for s in suites}
    effects = {s: {m: effect(by[(s, m)]) for m in verdicts[s]} for s in suites}
    ranks = {s: dominance_ranks(effects[s]) for s in suites}
    order = {s: _order(effects[s], ranks[s]) for s in suites}
    overall_effects = {m: effects.get(RANKED_BY, {}).get(m) for m in methods}
    # Controls are the scale's anchors, not contenders: they show their effect but take no rank.
    overall_ranks = dominance_ranks({m: None if is_control(m) else e for m, e in overall_effects.items()})
    labels = rank_labels(overall_ranks)
    overall = [{**_overall_row(m, suites, verdicts, overall_effects[m]), "rank": overall_ranks[m],
                "rank_label": labels[m]} for m in _order(overall_effects, overall_ranks, limits)]
    return {
        "suites": suites, "verdicts": verdicts, "fdr": fdr, "survivors": survivors, "ranks": ranks,
        "rank_labels": {s: rank_labels(ranks[s]) for s in suites}, "order": order,
        "effects": {s: {m: None if e is None else e.as_dict() for m, e in effects[s].items()} for s in suites},
        "overall": overall, "ranked_by": RANKED_BY,
    }


def effect_text(e: dict | None) -> str:
    """'0.62 [0.55, 0.70]' or '—'."""
    return "—" if e is None else f"{e['mean']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]"


def passed_text(row: dict) -> str:
    """'2/4' (properties passed of those applicable), with ', 1 inconclusive' when some are."""
    return f"{row['passed']}/{row['applicable']}" + (f", {row['inconclusive']} inconclusive"
                                                     if row.get("inconclusive") else "")


def overall_rows(summary: dict) -> list[list]:
    """Rows (rank, method, effect, passed/applicable, verdict per suite) of the overall ranking."""
    return [[r["rank_label"], r["method"], effect_text(r["effect"]), passed_text(r)]
            + [r[s] for s in summary["suites"]] for r in summary["overall"]]


def is_control(method: str) -> bool:
    """Whether ``method`` is a registered control (a constructed map, not a graded method)."""
    discover()
    cls = all_methods().get(method)
    return bool(cls is not None and cls.capabilities.control)


def verdict_counts(suite: str, summary: dict) -> dict[str, int]:
    """Real methods per property verdict on one property (PASS, FAIL, INCONCLUSIVE, ...); controls, N/A and
    UNDECIDED are not counted."""
    counts: dict[str, int] = {}
    for m, v in summary["verdicts"][suite].items():
        if v not in (NA, UNDECIDED) and not is_control(m):
            counts[v] = counts.get(v, 0) + 1
    return counts


def discrimination(suite: str, summary: dict) -> tuple[int, int]:
    """(real methods that pass, real methods with a verdict) on one property; controls are not counted."""
    counts = verdict_counts(suite, summary)
    return counts.get(PASS, 0), sum(counts.values())
