"""Turn per-sample scores into PASS / FAIL / INCONCLUSIVE / ERROR / N/A cells, and one assertion for all suites."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pytest

from benchmark.grading.properties import ARROW, MetricSpec, Property
from benchmark.grading.stats import (
    ALPHA,
    Interval,
    benjamini_hochberg,
    positive_p_value,
    studentized_mean,
    supports_positive,
)

PASS, FAIL, ERROR, NA, UNDECIDED = "PASS", "FAIL", "ERROR", "N/A", "UNDECIDED"
# The CI neither clears the pass level nor lies wholly on its fail side, or a control neither is beaten nor beats
# the method: this run cannot tell (more images or training seeds can). Not a failing test (assert_cell).
INCONCLUSIVE = "INCONCLUSIVE"
INFO = "INFO"  # a scored cell of an informational property: neither passes nor fails
# Most graded maps collapsed to a constant (MetricSpec.collapse): the score is undefined, the property not shown.
COLLAPSED = "COLLAPSED"
OUTCOMES = (PASS, FAIL, INCONCLUSIVE, ERROR, NA, INFO, COLLAPSED)
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
    # p-value comes from the t interval on the seeds' means (stats.hierarchical_mean).
    seed_counts: list[int] = field(default_factory=list)
    # With two or more seeds, the outcome on each seed alone and leaving each seed out, in the order of
    # ``seed_counts`` (benchmark.grading.seed_stability); empty for one seed, and in records written before them.
    seed_outcomes: list[str] = field(default_factory=list)
    loso_outcomes: list[str] = field(default_factory=list)

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


def collapse_mask(metric: MetricSpec, s: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
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
    ``groups``: each sample's training seed (two or more: the t interval on the seeds' means).
    """
    neg, pos = np.asarray(anchors.neg, dtype=np.float64).ravel(), np.asarray(anchors.pos, dtype=np.float64).ravel()
    if neg.shape != pos.shape:
        raise ValueError(f"the controls have {neg.size} and {pos.size} scores for the same samples")
    gone = collapse_mask(metric, neg, [pos])
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


@dataclass(frozen=True)
class ControlComparison:
    """A method's paired comparison with one control on the kept images."""

    name: str
    control: Interval  # the control's own score
    diff: Interval  # method - control
    beaten: bool  # the difference lies on the better side of zero with statistical support
    p_value: float  # two-sided p of "the method is better"
    lost: bool = False  # the difference lies on the worse side of zero with statistical support: the control wins

    def as_dict(self) -> dict:
        """The cell's ``comparisons`` entry."""
        return {"control": self.control.as_dict(), "diff": self.diff.as_dict(), "beaten": self.beaten,
                "lost": self.lost}


@dataclass(frozen=True)
class PassLevel:
    """Where a pass falls on a metric in this run, whether the method clears it, and whether it falls short of it."""

    kind: str  # FIXED (the metric's fixed threshold), SKILL (the property's pass level) or NO_LEVEL
    threshold: float | None  # in the metric's units; None without a pass level
    meets: bool  # the CI lies wholly on the pass side
    p_value: float | None  # two-sided p of "the method clears it"; None without a pass level
    below: bool = False  # the CI lies wholly on the fail side (never without a pass level)


FIXED, SKILL, NO_LEVEL = "fixed", "skill", "none"


@dataclass(frozen=True)
class Statistics:
    """What :func:`judge` computes from the per-sample scores, before deciding anything."""

    scores: np.ndarray  # the method's scores on the kept images
    keep: np.ndarray  # per graded image: not left out as collapsed
    score: Interval
    comparisons: list[ControlComparison]
    informative: bool | None  # None: no anchors
    validity_reason: str
    skills: np.ndarray | None  # per kept image; None: no anchors, or the anchors do not order
    skill: Interval | None
    level: PassLevel
    seed_counts: list[int]

    @property
    def n_collapsed(self) -> int:
        """Graded images left out because a map collapsed."""
        return int((~self.keep).sum())

    @property
    def not_beaten(self) -> list[ControlComparison]:
        """The controls the method does not beat."""
        return [c for c in self.comparisons if not c.beaten]

    @property
    def beaten_by(self) -> list[ControlComparison]:
        """The controls that beat the method (their difference lies wholly on the worse side of zero)."""
        return [c for c in self.comparisons if c.lost]

    @property
    def undecided(self) -> list[ControlComparison]:
        """The controls the method neither beats nor is beaten by."""
        return [c for c in self.comparisons if not c.beaten and not c.lost]

    @property
    def p_value(self) -> float | None:
        """The PASS claim's intersection-union p: the largest over the controls and the pass level."""
        if self.level.p_value is None:
            return None
        return max([c.p_value for c in self.comparisons] + [self.level.p_value])


def _compare_controls(metric: MetricSpec, s: np.ndarray, controls: dict[str, np.ndarray], keep: np.ndarray,
                      seed: int, g) -> list[ControlComparison]:
    """The method's kept scores against each control's, paired image by image."""
    out = []
    for name, c in controls.items():
        c = np.asarray(c, dtype=np.float64).ravel()
        if c.size != keep.size:
            raise ValueError(f"{name} (control) has {c.size} scores for {keep.size} samples")
        c = check_scores(c[keep], f"{name} (control)")
        beaten, diff = _beats(s, c, metric.direction, seed, g)
        oriented = metric.sign * (s - c)
        p = positive_p_value(oriented, seed=seed, groups=g)
        # Whether the control wins, by the same test on the negated differences; only asked when the method does not
        # win itself (both cannot hold), which spares a bootstrap per beaten control.
        lost = not beaten and supports_positive(-oriented, seed=seed, groups=g)[0]
        out.append(ControlComparison(name, studentized_mean(c, seed=seed, groups=g), diff, beaten, p, lost))
    return out


def judge_pass_level(prop: Property, metric: MetricSpec, s: np.ndarray, anchors: Anchors | None,
                     skills: np.ndarray | None, seed: int, g) -> PassLevel:
    """The fixed threshold, else the pass level placed between the controls, else none; and whether ``s`` clears it."""
    if metric.threshold is not None:
        kind, threshold, oriented = FIXED, metric.threshold, metric.sign * (s - metric.threshold)
    elif skills is not None:
        threshold = float(anchors.neg.mean() + prop.pass_level * (anchors.pos.mean() - anchors.neg.mean()))
        kind, oriented = SKILL, skills - prop.pass_level
    else:
        return PassLevel(NO_LEVEL, None, False, None)
    meets, _ = supports_positive(oriented, seed=seed, groups=g)
    # Wholly on the fail side: the same test on the negated values (only asked when the pass side is not supported).
    below = not meets and supports_positive(-oriented, seed=seed, groups=g)[0]
    return PassLevel(kind, threshold, meets, positive_p_value(oriented, seed=seed, groups=g), below)


def statistics(prop: Property, metric: MetricSpec, method: str, s: np.ndarray, controls: dict[str, np.ndarray],
               anchors: Anchors | None, keep: np.ndarray, *, seed: int = 0, groups=None) -> Statistics:
    """The statistics of one cell on the kept images (``keep``): the score's CI, the control comparisons, the
    anchors' validity, the skill and the pass level, with their p-values. ``groups``: every graded image's seed."""
    g = None if groups is None else groups[keep]
    s = check_scores(s[keep], method)
    if anchors is not None and not keep.all():
        anchors = Anchors(anchors.negative, anchors.positive, np.asarray(anchors.neg, dtype=np.float64)[keep],
                          np.asarray(anchors.pos, dtype=np.float64)[keep])
    score = studentized_mean(s, seed=seed, groups=g)
    comparisons = _compare_controls(metric, s, controls, keep, seed, g)
    informative, reason = (None, "") if anchors is None else anchor_validity(metric, anchors, seed=seed, groups=g)
    skills = None if anchors is None else skill_scores(metric, s, anchors)
    skill = None if skills is None else studentized_mean(skills, seed=seed, groups=g)
    level = judge_pass_level(prop, metric, s, anchors, skills, seed, g)
    return Statistics(s, keep, score, comparisons, informative, reason, skills, skill, level, seed_counts(groups))


def collapses(s: np.ndarray, gone: np.ndarray) -> bool:
    """Whether a cell is COLLAPSED: images left out (``gone``) and most of the method's own maps collapsed, or all."""
    return bool(gone.any() and (2 * np.isnan(s).sum() > s.size or gone.all()))


def three_way(meets: bool, beats_all: bool, below: bool, beaten: bool) -> str:
    """PASS when the pass level is met and every control beaten; FAIL when the CI lies wholly below the pass level or a
    control beats the method; else INCONCLUSIVE (the rule :func:`decide` and the seed-stability re-judging share)."""
    if meets and beats_all:
        return PASS
    return FAIL if below or beaten else INCONCLUSIVE


def decide(prop: Property, metric: MetricSpec, stats: Statistics) -> str:
    """The outcome: INFO when not graded; PASS when the CI clears the pass level and every control is beaten; FAIL
    when the CI lies wholly on the fail side of the pass level or a control beats the method; else INCONCLUSIVE."""
    if prop.informational or metric.no_vote:
        return INFO
    # INCONCLUSIVE when a part is undecided: the CI straddles the pass level, or a control neither is beaten nor beats it.
    # Without a pass level (NO_LEVEL: the positive control does not score better than the negative one) the cell can
    # never PASS, and it is INCONCLUSIVE rather than FAIL unless a control beats the method: a FAIL needs evidence
    # against the method, and the run has no scale to find it short on. Such a metric is uninformative in the run
    # (its controls do not separate), so the cell does not vote either way; the outcome only keeps the reports honest.
    return three_way(stats.level.meets, not stats.not_beaten, stats.level.below, bool(stats.beaten_by))


def _control_parts(stats: Statistics) -> tuple[list[str], list[str]]:
    """(one phrase per control that beats the method, one per control neither beaten nor beating)."""
    return ([f"is beaten by {c.name} ({c.control.fmt()}; diff {c.diff.fmt()})" for c in stats.beaten_by],
            [f"neither beats nor is beaten by {c.name} ({c.control.fmt()}; diff {c.diff.fmt()})"
             for c in stats.undecided])


def _level_text(prop: Property, stats: Statistics) -> str:
    """The pass level in words."""
    level = stats.level
    if level.kind == FIXED:
        return f"fixed threshold {level.threshold:g}"
    if level.kind == SKILL:
        return f"skill {stats.skill.fmt()} vs pass level {prop.pass_level:g} (score {level.threshold:.3g} in this run)"
    return f"no pass level: {prop.positive} does not score better than {prop.negative} on this metric"


def _level_part(prop: Property, stats: Statistics) -> str | None:
    """Why the CI does not clear the pass level: it lies wholly on the fail side, or straddles it (None: it clears)."""
    level = stats.level
    if level.meets:
        return None
    if level.kind == NO_LEVEL:
        return "nothing to clear without a pass level"
    iv, what, value = ((stats.skill, "skill", prop.pass_level) if level.kind == SKILL
                       else (stats.score, "score", level.threshold))
    at = f"the pass level {value:g}" if level.kind == SKILL else f"the fixed threshold {value:g}"
    if level.below:
        side = "lies wholly below" if level.kind == SKILL else "lies wholly on the fail side of"
    elif iv.low <= value <= iv.high:
        side = "straddles"
    else:  # values with no spread are judged by the exact sign test, which needs 6 images
        side = f"has no spread on too few images ({iv.n}) to be judged against"
    return f"{what} CI [{iv.low:.3f}, {iv.high:.3f}] {side} {at}"


def _how_to_decide(stats: Statistics) -> str:
    """What narrows the CI enough to decide an INCONCLUSIVE cell, given the seeds it rests on."""
    k = len(stats.seed_counts)
    if k:
        return (f"to decide it, train more seeds (--bench-model-seeds above {k}): the CI rests on the {k} seeds' means, "
                "so more seeds narrow it most; more images per seed (--bench-profile standard or paper) help less")
    return ("to decide it, grade more images (a larger profile: --bench-profile standard or paper) or train several "
            "seeds (--bench-model-seeds 3 or more: the CI then covers training runs too)")


def _headline(prop: Property, metric: MetricSpec, method: str, stats: Statistics) -> str:
    """The message up to the colon: the score, the pass level, and how many seeds and images it rests on."""
    head = f"{method} × {metric.name} {ARROW[metric.direction]}: {stats.score.fmt()}; {_level_text(prop, stats)}"
    if stats.seed_counts:
        head += f" (over {len(stats.seed_counts)} training seeds and their images: t interval on the seeds' means)"
    if stats.n_collapsed:
        head += (f" ({stats.n_collapsed} of {stats.keep.size} images left out: a map collapsed to a constant, "
                 f"{metric.collapse})")
    return head


def message(prop: Property, metric: MetricSpec, method: str, stats: Statistics, outcome: str) -> str:
    """The cell's human-readable message: the headline, then why the outcome is what it is (for INCONCLUSIVE, which
    part is undecided and how to decide it)."""
    beaten = [c.name for c in stats.comparisons]
    lost, undecided = _control_parts(stats)
    level = _level_part(prop, stats)
    if outcome == INFO:
        kind = "informational, not graded" if prop.informational else f"reported, not voted: {metric.no_vote}"
        not_beaten = [f"does not beat {c.name} ({c.control.fmt()}; diff {c.diff.fmt()})" for c in stats.not_beaten]
        why = kind + (f" ({'; '.join(not_beaten)})" if not_beaten else f" (beats {', '.join(beaten)})" if beaten else "")
    elif outcome == PASS:
        why = ("meets the pass level" if metric.threshold is None else "meets the threshold") + (
            " and beats " + ", ".join(beaten) if beaten else "")
    else:
        why = f"{outcome}: " + "; ".join(([] if level is None else [level]) + lost + undecided)
        if outcome == INCONCLUSIVE and stats.level.kind != NO_LEVEL:
            why += f"; {_how_to_decide(stats)}"
        elif outcome == FAIL:
            why += f"; {_trust_and_next(stats)}"
    return f"{_headline(prop, metric, method, stats)}: {why}"


def _trust_and_next(stats: Statistics) -> str:
    """How far to trust a FAIL (the training seeds its CI covers) and what to do next."""
    k = len(stats.seed_counts)
    if k:
        return f"trust: the CI covers {k} training seeds; next: see where its maps go (the report's flipped examples)"
    return ("trust: one training seed, so a near miss can flip on a retrain; next: confirm with --bench-model-seeds 3, "
            "then see where its maps go (the report's flipped examples)")


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
    of the paired difference lies on the 'better' side of zero. FAIL iff the CI lies wholly on the fail side of the
    pass level, or a control beats the method (the difference's CI lies wholly on the 'worse' side). Otherwise
    INCONCLUSIVE: this run's CIs cannot tell. Pass level and controls are judged by the same standard
    (:func:`benchmark.grading.stats.supports_positive`, on the negated values for the fail side, so values with no
    spread count only by the exact sign test).

    ``controls`` maps control name (a control method, or FALSE_ALARM for the same method on the
    control model) to per-sample scores on the same samples, in the same order. ``anchors``: the property's
    negative and positive controls on the same samples; without them no skill and no pass level exist.
    ``groups``: each sample's training seed; with two or more seeds every interval and p-value comes from the
    t interval on the seeds' means (:func:`benchmark.grading.stats.hierarchical_mean`).

    Three steps: :func:`statistics` (numbers only), :func:`decide` (the outcome) and :func:`message` (the words).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    paired = [np.asarray(c, dtype=np.float64).ravel() for c in controls.values()]
    if anchors is not None:
        paired += [np.asarray(anchors.neg, dtype=np.float64).ravel(), np.asarray(anchors.pos, dtype=np.float64).ravel()]
    gone = collapse_mask(metric, s, paired)
    if groups is not None:
        groups = np.asarray(groups).ravel()
        if groups.size != s.size:
            raise ValueError(f"{groups.size} seed labels for {s.size} samples")
    if collapses(s, gone):
        return _collapsed(prop, metric, method, s, gone, seed, groups)
    stats = statistics(prop, metric, method, s, controls, anchors, ~gone, seed=seed, groups=groups)
    outcome = decide(prop, metric, stats)
    return Cell(
        **{**_base(prop, metric, method), "threshold": stats.level.threshold}, outcome=outcome,
        message=message(prop, metric, method, stats, outcome), score=stats.score.as_dict(),
        comparisons={c.name: c.as_dict() for c in stats.comparisons}, scores=_with_gaps(stats.scores, stats.keep),
        votes=not metric.no_vote, informative=stats.informative, validity_reason=stats.validity_reason,
        skill=None if stats.skill is None else stats.skill.as_dict(),
        skills=[] if stats.skills is None else _with_gaps(stats.skills, stats.keep), p_value=stats.p_value,
        n_collapsed=stats.n_collapsed, seed_counts=stats.seed_counts,
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

    The family of a property is every deciding PASS, FAIL or INCONCLUSIVE cell of the run that has a p-value (its
    pass claim's intersection-union p: the largest over pass level and controls): every judged cell, whatever its
    outcome, so the family does not depend on the outcomes it adjusts.
    """
    families: dict[str, list[Cell]] = {}
    for c in cells:
        if c.decides and c.outcome in (PASS, FAIL, INCONCLUSIVE) and c.p_value is not None:
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
    was uninformative; INFO for an informational property. Otherwise, over the deciding (applicable, informative,
    voting) cells: PASS if a strict majority pass, counting a pass only if it is in ``survivors`` when given (the
    Benjamini-Hochberg step within the property); FAIL if no strict majority could pass even were every undecided
    cell a pass (a COLLAPSED cell counts as a fail: its test fails); else INCONCLUSIVE: the undecided cells hold the
    balance. So the rule is the two-outcome majority rule, and INCONCLUSIVE exactly where deciding the undecided
    cells could change its verdict (an even split of passes and fails stays a FAIL, as before). A raw pass that does
    not survive the step is undecided: the evidence for it is too weak given the property's other tests, which is
    not evidence against it.
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
    failed = sum(c.outcome in (FAIL, COLLAPSED) for c in deciding)
    if passed * 2 > len(deciding):
        return PASS
    undecided = len(deciding) - passed - failed
    return FAIL if (passed + undecided) * 2 <= len(deciding) else INCONCLUSIVE


def assert_cell(cell: Cell) -> None:
    """The one assertion every suite uses: PASS and INCONCLUSIVE return, FAIL/ERROR/COLLAPSED fail the test, N/A,
    uninformative and INFO cells skip it.

    An INCONCLUSIVE cell's test passes, and the plugin's ``pytest_report_teststatus`` shows it as "inconclusive"
    (letter "?", "N inconclusive" in the summary; benchmark.running.teststatus). The alternatives each say something
    false: a failure claims the method lacks the property; a plain pass would be counted with the passes and hidden;
    skip means "not run", and this cell ran and was graded; xfail means "expected failure". A custom status on a
    passed report is neither failing nor hidden, travels under xdist (the controller reads the cell on the report's
    user_properties), and leaves the exit status to the decided cells.
    """
    if cell.outcome == NA:
        pytest.skip(cell.message)
    if cell.informative is False:
        pytest.skip(f"{cell.metric} is uninformative in this run ({cell.validity_reason}); raw verdict "
                    f"{cell.outcome}: {cell.message}")
    if cell.outcome == INFO:
        pytest.skip(cell.message)
    if cell.outcome in (FAIL, ERROR, COLLAPSED):
        pytest.fail(cell.message, pytrace=False)
