"""Turn per-sample scores into PASS / FAIL / ERROR / N/A cells, and one assertion for all suites."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from benchmark.properties import ARROW, MetricSpec, Property
from benchmark.stats import ALPHA, Interval, benjamini_hochberg, positive_p_value, studentized_mean, supports_positive

PASS, FAIL, ERROR, NA, UNDECIDED = "PASS", "FAIL", "ERROR", "N/A", "UNDECIDED"
INFO = "INFO"  # a scored cell of an informational property: neither passes nor fails
# Most graded maps collapsed to a constant (MetricSpec.collapse): the score is undefined, the property not shown.
COLLAPSED = "COLLAPSED"
OUTCOMES = (PASS, FAIL, ERROR, NA, INFO, COLLAPSED)
USER_PROPERTY = "shortcut_bench_cell"  # key of the cell on pytest's report.user_properties


@dataclass
class Cell:
    """One graded (property, metric, method) result, JSON-serialisable for user_properties."""

    suite: str
    suite_version: str
    property: str
    metric: str
    method: str
    direction: str
    threshold: float | None  # in the metric's units: the fixed override, or where the pass level fell in this run
    outcome: str
    message: str
    score: dict | None = None  # Interval.as_dict()
    comparisons: dict[str, dict] = field(default_factory=dict)  # control -> {"control": .., "diff": .., "beaten": ..}
    informative: bool | None = None
    validity_reason: str = ""
    scores: list[float | None] = field(default_factory=list)  # None: the image's map collapsed (MetricSpec.collapse)
    seconds: float = 0.0
    votes: bool = True  # False: the metric is reported (INFO) but does not vote in the property's verdict
    standard: str = ""  # what a pass needs, the same on every machine: "skill >= 0.5" or "fixed threshold 0.8"
    skill: dict | None = None  # Interval.as_dict() of the skill: 0 = the negative control, 1 = the positive one
    skills: list[float | None] = field(default_factory=list)  # per-image skill, in the order of ``scores``
    # Two-sided p-value of the PASS claim: the largest over its parts (pass level, each control), an
    # intersection-union test; what the property's Benjamini-Hochberg step adjusts. None: no pass level.
    p_value: float | None = None
    n_collapsed: int = 0  # graded images whose map collapsed (left out of every statistic)
    # Images per training seed, in the order of ``scores`` (empty: one seed). With two or more, every interval and
    # p-value is the hierarchical bootstrap's (seeds, then images).
    seed_counts: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        """Serialise (floats rounded to keep reports stable and small)."""
        return json.dumps(_round(asdict(self)), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Cell:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))

    @property
    def decides(self) -> bool:
        """Whether this cell counts towards the property's overall verdict."""
        return self.outcome != NA and self.informative is not False and self.votes


def _round(obj: Any, digits: int = 6) -> Any:
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _round(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v, digits) for v in obj]
    return obj


def standard(prop: Property, metric: MetricSpec) -> str:
    """What a pass on ``metric`` needs, in words that do not depend on the run's numbers."""
    if metric.threshold is not None:
        return f"fixed threshold {metric.threshold:g}"
    return f"skill >= {prop.pass_level:g} ({prop.negative} = 0, {prop.positive} = 1)"


def _base(prop: Property, metric: MetricSpec, method: str) -> dict:
    return dict(
        suite=prop.key, suite_version=prop.version, property=prop.name, metric=metric.name, method=method,
        direction=metric.direction, threshold=metric.threshold, standard=standard(prop, metric),
    )


def not_applicable(prop: Property, metric: MetricSpec, method: str, reason: str) -> Cell:
    """A cell for a method the property does not apply to."""
    return Cell(**_base(prop, metric, method), outcome=NA, message=f"{method}: n/a for {prop.name}: {reason}")


def error(prop: Property, metric: MetricSpec, method: str, exc: BaseException | str) -> Cell:
    """A cell for a method or metric that crashed or produced non-finite scores; the message is kept."""
    reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return Cell(**_base(prop, metric, method), outcome=ERROR, message=f"{method} × {metric.name}: ERROR: {reason}")


def check_scores(scores: np.ndarray, who: str, *, collapse: bool = False) -> np.ndarray:
    """Per-sample scores as float64; raise ValueError naming ``who`` when any is NaN or infinite (NaN is allowed
    with ``collapse``: a metric's mark for a collapsed map, see MetricSpec.collapse)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    bad = ~np.isfinite(s) & ~(collapse & np.isnan(s))
    if s.size == 0:
        raise ValueError(f"{who} produced no scores")
    if bad.any():
        raise ValueError(f"{who} produced {int(bad.sum())} NaN/inf of {s.size} per-sample scores")
    return s


def _collapse_mask(metric: MetricSpec, s: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """Images left out as collapsed: NaN in the method's scores or any paired control's, for a metric that declares
    collapse (an empty mask for every other metric, whose NaNs are errors)."""
    if not metric.collapse:
        return np.zeros(s.size, dtype=bool)
    mask = np.isnan(s)
    for o in others:
        if o.shape == s.shape:
            mask |= np.isnan(o)
    return mask


def _with_gaps(values: np.ndarray, keep: np.ndarray) -> list[float | None]:
    # Full-length per-image list (so baselines pair by image id), None where the image was left out.
    out: list[float | None] = [None] * keep.size
    for i, v in zip(np.flatnonzero(keep), values):
        out[int(i)] = float(v)
    return out


def _collapsed(prop: Property, metric: MetricSpec, method: str, s: np.ndarray, gone: np.ndarray, seed: int,
               groups: np.ndarray | None) -> Cell:
    n, total = int(gone.sum()), gone.size
    kept = s[~gone]
    g = None if groups is None else groups[~gone]
    score = studentized_mean(kept, seed=seed, groups=g).as_dict() if kept.size else None
    return Cell(**_base(prop, metric, method), outcome=COLLAPSED,
                message=(f"{method} × {metric.name}: COLLAPSED: {n} of {total} maps collapsed to a constant ({metric.collapse})"
                         f"; with most images undefined the property is not shown"),
                score=score, scores=_with_gaps(kept, ~gone), n_collapsed=n, seed_counts=seed_counts(groups))


def _beats(s: np.ndarray, c: np.ndarray, direction: str, seed: int, groups) -> tuple[bool, Interval]:
    """Whether ``s`` is better than ``c`` on the same samples, and the CI of the difference s - c."""
    diff = s - c
    beaten, _ = supports_positive(diff if direction == "higher" else -diff, seed=seed, groups=groups)
    return beaten, studentized_mean(diff, seed=seed, groups=groups)


@dataclass(frozen=True)
class Anchors:
    """A metric's scores of the property's negative and positive controls in this run, on the graded images."""

    negative: str
    positive: str
    neg: np.ndarray
    pos: np.ndarray


def anchor_validity(metric: MetricSpec, anchors: Anchors, *, seed: int = 0, groups=None) -> tuple[bool, str]:
    """Whether the positive control beats the negative one on ``metric`` with statistical support, and the evidence.

    A metric that cannot tell the map that has the property from the one that lacks it cannot grade a method.
    ``groups``: each sample's training seed (two or more: the hierarchical bootstrap).
    """
    neg, pos = np.asarray(anchors.neg, dtype=np.float64).ravel(), np.asarray(anchors.pos, dtype=np.float64).ravel()
    if neg.shape != pos.shape:
        raise ValueError(f"the controls have {neg.size} and {pos.size} scores for the same samples")
    gone = _collapse_mask(metric, neg, [pos])
    neg = check_scores(neg[~gone], f"{anchors.negative} (negative control)")
    pos = check_scores(pos[~gone], f"{anchors.positive} (positive control)")
    g = None if groups is None else np.asarray(groups).ravel()[~gone]
    oriented = metric.sign * (pos - neg)
    separated, gap = supports_positive(oriented, seed=seed, groups=g)
    return separated, (f"negative {anchors.negative} {studentized_mean(neg, seed=seed, groups=g).fmt()}, positive "
                       f"{anchors.positive} {studentized_mean(pos, seed=seed, groups=g).fmt()}: {anchors.positive} better by "
                       f"{gap.fmt()} ({'yes' if separated else 'NO'})")


def skill_scores(metric: MetricSpec, scores: np.ndarray, anchors: Anchors) -> np.ndarray | None:
    """Per-image skill: the score placed between the controls, 0 = negative, 1 = positive (None when they do not
    order). Paired with the negative control image by image; the denominator is the controls' mean gap.

    Reference: Murphy 1988, Skill scores based on the mean square error, Monthly Weather Review (skill relative
    to a reference forecast).
    """
    neg, pos = np.asarray(anchors.neg, dtype=np.float64), np.asarray(anchors.pos, dtype=np.float64)
    gap = metric.sign * float(pos.mean() - neg.mean())
    if not gap > 0:
        return None
    return metric.sign * (np.asarray(scores, dtype=np.float64) - neg) / gap


def judge(
    prop: Property,
    metric: MetricSpec,
    method: str,
    scores: np.ndarray,
    controls: dict[str, np.ndarray],
    anchors: Anchors | None = None,
    *,
    seed: int = 0,
    groups=None,
) -> Cell:
    """PASS iff the studentised 95% CI of the method's skill lies above the property's pass level (or, with a fixed
    threshold, the score's CI on its passing side) and the method beats every given control: the studentised 95% CI
    of the paired difference lies on the 'better' side of zero. Pass level and controls are judged by the same
    standard (:func:`benchmark.stats.supports_positive`, so values with no spread count only by the exact sign test).

    ``controls`` maps control name (a control method, or FALSE_ALARM for the same method on the
    control model) to per-sample scores on the same samples, in the same order. ``anchors``: the property's
    negative and positive controls on the same samples; without them no skill and no pass level exist.
    ``groups``: each sample's training seed; with two or more seeds every interval and p-value comes from the
    hierarchical bootstrap (seeds, then images; :func:`benchmark.stats.hierarchical_mean`).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    paired = [np.asarray(c, dtype=np.float64).ravel() for c in controls.values()]
    if anchors is not None:
        paired += [np.asarray(anchors.neg, dtype=np.float64).ravel(), np.asarray(anchors.pos, dtype=np.float64).ravel()]
    gone = _collapse_mask(metric, s, paired)
    if groups is not None:
        groups = np.asarray(groups).ravel()
        if groups.size != s.size:
            raise ValueError(f"{groups.size} seed labels for {s.size} samples")
    if gone.any() and (2 * np.isnan(s).sum() > s.size or gone.all()):
        return _collapsed(prop, metric, method, s, gone, seed, groups)
    keep = ~gone
    g = None if groups is None else groups[keep]
    s = check_scores(s[keep], method)
    if anchors is not None and gone.any():
        anchors = Anchors(anchors.negative, anchors.positive, np.asarray(anchors.neg, dtype=np.float64)[keep],
                          np.asarray(anchors.pos, dtype=np.float64)[keep])
    score = studentized_mean(s, seed=seed, groups=g)
    comparisons, lost, p_parts = {}, [], []
    for name, c in controls.items():
        c = np.asarray(c, dtype=np.float64).ravel()
        if c.size != keep.size:
            raise ValueError(f"{name} (control) has {c.size} scores for {keep.size} samples")
        c = check_scores(c[keep], f"{name} (control)")
        beaten, diff = _beats(s, c, metric.direction, seed, g)
        p_parts.append(positive_p_value(metric.sign * (s - c), seed=seed, groups=g))
        control = studentized_mean(c, seed=seed, groups=g)
        comparisons[name] = {"control": control.as_dict(), "diff": diff.as_dict(), "beaten": beaten}
        if not beaten:
            lost.append(f"does not beat {name} ({control.fmt()}; diff {diff.fmt()})")
    informative, reason = (None, "") if anchors is None else anchor_validity(metric, anchors, seed=seed, groups=g)
    skills = None if anchors is None else skill_scores(metric, s, anchors)
    skill = None if skills is None else studentized_mean(skills, seed=seed, groups=g)
    arrow = ARROW[metric.direction]
    if metric.threshold is not None:
        threshold = metric.threshold
        meets, _ = supports_positive(metric.sign * (s - threshold), seed=seed, groups=g)
        p_parts.append(positive_p_value(metric.sign * (s - threshold), seed=seed, groups=g))
        line, miss = f"fixed threshold {threshold:g}", "misses the threshold (its CI reaches past it)"
    elif skill is not None:
        threshold = float(anchors.neg.mean() + prop.pass_level * (anchors.pos.mean() - anchors.neg.mean()))
        meets, _ = supports_positive(skills - prop.pass_level, seed=seed, groups=g)
        p_parts.append(positive_p_value(skills - prop.pass_level, seed=seed, groups=g))
        line = f"skill {skill.fmt()} vs pass level {prop.pass_level:g} (score {threshold:.3g} in this run)"
        miss = f"misses the pass level (its skill CI reaches below {prop.pass_level:g})"
    else:
        threshold, meets, p_parts = None, False, []
        line = miss = f"no pass level: {prop.positive} does not score better than {prop.negative} on this metric"
    head = f"{method} × {metric.name} {arrow}: {score.fmt()}; {line}"
    counts = seed_counts(groups)
    if counts:
        head += f" (over {len(counts)} training seeds and their images: hierarchical bootstrap)"
    if gone.any():
        head += (f" ({int(gone.sum())} of {gone.size} images left out: a map collapsed to a constant, "
                 f"{metric.collapse})")
    votes = not metric.no_vote
    if prop.informational or not votes:
        outcome = INFO
        kind = "informational, not graded" if prop.informational else f"reported, not voted: {metric.no_vote}"
        why = kind + (f" ({'; '.join(lost)})" if lost else f" (beats {', '.join(controls)})" if controls else "")
    elif meets and not lost:
        outcome = PASS
        why = ("meets the pass level" if metric.threshold is None else "meets the threshold") + (
            " and beats " + ", ".join(controls) if controls else "")
    else:
        outcome = FAIL
        why = "; ".join(([] if meets else [miss]) + lost)
    return Cell(
        **{**_base(prop, metric, method), "threshold": threshold}, outcome=outcome, message=f"{head}: {why}",
        score=score.as_dict(), comparisons=comparisons, scores=_with_gaps(s, keep), votes=votes,
        informative=informative, validity_reason=reason, skill=None if skill is None else skill.as_dict(),
        skills=[] if skills is None else _with_gaps(skills, keep), p_value=max(p_parts) if p_parts else None,
        n_collapsed=int(gone.sum()), seed_counts=counts,
    )


def seed_counts(groups) -> list[int]:
    """Samples per training seed, in order of first appearance ([] for one seed or none)."""
    if groups is None:
        return []
    g = np.asarray(groups).ravel()
    _, first, counts = np.unique(g, return_index=True, return_counts=True)
    return [] if counts.size < 2 else [int(c) for _, c in sorted(zip(first, counts))]


def cell_id(c: Cell) -> tuple[str, str, str]:
    """(suite, metric, method): a cell's identity in a run."""
    return c.suite, c.metric, c.method


def fdr_survivors(cells: list[Cell], q: float = ALPHA) -> tuple[set[tuple[str, str, str]], dict[str, dict]]:
    """The PASS cells whose pass survives Benjamini-Hochberg at false discovery rate ``q`` within their property,
    and per property the family size, raw passes and survivors.

    The family of a property is every deciding PASS or FAIL cell of the run that has a p-value (its pass claim's
    intersection-union p: the largest over pass level and controls).
    """
    families: dict[str, list[Cell]] = {}
    for c in cells:
        if c.decides and c.outcome in (PASS, FAIL) and c.p_value is not None:
            families.setdefault(c.suite, []).append(c)
    survivors, stats = set(), {}
    for suite, family in families.items():
        rejected = benjamini_hochberg([c.p_value for c in family], q)
        kept = {cell_id(c) for c, r in zip(family, rejected) if r and c.outcome == PASS}
        survivors |= kept
        stats[suite] = {"family": len(family), "raw_pass": sum(c.outcome == PASS for c in family),
                        "survive": len(kept), "q": q}
    return survivors, stats


def property_verdict(cells: list[Cell], survivors: set[tuple[str, str, str]] | None = None) -> str:
    """Overall verdict of one method on one property from its metric cells.

    ERROR if any deciding cell errored; N/A if none applies; UNDECIDED if every applicable voting metric
    was uninformative; INFO for an informational property; PASS if a strict majority of the deciding
    (applicable, informative, voting) cells pass (a COLLAPSED cell decides and does not pass), counting a
    pass only if it is in ``survivors`` when given (the Benjamini-Hochberg step within the property);
    else FAIL.
    """
    deciding = [c for c in cells if c.decides]
    if not deciding:
        # Every applicable metric was uninformative (or reported without a vote): the run cannot decide.
        return NA if all(c.outcome == NA for c in cells) else UNDECIDED
    if any(c.outcome == ERROR for c in deciding):
        return ERROR
    if all(c.outcome == INFO for c in deciding):
        return INFO
    passed = sum(c.outcome == PASS and (survivors is None or cell_id(c) in survivors) for c in deciding)
    return PASS if passed * 2 > len(deciding) else FAIL


def assert_cell(cell: Cell) -> None:
    """The one assertion every suite uses: PASS returns, FAIL/ERROR fail the test, N/A and INFO skip it."""
    import pytest

    if cell.outcome == NA:
        pytest.skip(cell.message)
    if cell.informative is False:
        pytest.skip(f"{cell.metric} is uninformative in this run ({cell.validity_reason}); raw verdict "
                    f"{cell.outcome}: {cell.message}")
    if cell.outcome == INFO:
        pytest.skip(cell.message)
    if cell.outcome in (FAIL, ERROR, COLLAPSED):
        pytest.fail(cell.message, pytrace=False)
