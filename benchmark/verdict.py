"""Turn per-sample scores into PASS / FAIL / ERROR / N/A cells, and one assertion for all suites."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from benchmark.properties import ARROW, MetricSpec, Property, Validity
from benchmark.stats import Interval, studentized_mean, supports_positive

PASS, FAIL, ERROR, NA, UNDECIDED = "PASS", "FAIL", "ERROR", "N/A", "UNDECIDED"
INFO = "INFO"  # a scored cell of an informational property: neither passes nor fails
OUTCOMES = (PASS, FAIL, ERROR, NA, INFO)
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
    threshold: float
    outcome: str
    message: str
    score: dict | None = None  # Interval.as_dict()
    comparisons: dict[str, dict] = field(default_factory=dict)  # control -> {"control": .., "diff": .., "beaten": ..}
    informative: bool | None = None
    validity_reason: str = ""
    scores: list[float] = field(default_factory=list)
    seconds: float = 0.0
    votes: bool = True  # False: the metric is reported (INFO) but does not vote in the property's verdict

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


def _base(prop: Property, metric: MetricSpec, method: str) -> dict:
    return dict(
        suite=prop.key, suite_version=prop.version, property=prop.name, metric=metric.name, method=method,
        direction=metric.direction, threshold=metric.threshold,
    )


def not_applicable(prop: Property, metric: MetricSpec, method: str, reason: str) -> Cell:
    """A cell for a method the property does not apply to."""
    return Cell(**_base(prop, metric, method), outcome=NA, message=f"{method}: n/a for {prop.name}: {reason}")


def error(prop: Property, metric: MetricSpec, method: str, exc: BaseException | str) -> Cell:
    """A cell for a method or metric that crashed or produced non-finite scores; the message is kept."""
    reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return Cell(**_base(prop, metric, method), outcome=ERROR, message=f"{method} × {metric.name}: ERROR: {reason}")


def check_scores(scores: np.ndarray, who: str) -> np.ndarray:
    """Per-sample scores as float64; raise ValueError naming ``who`` when any is NaN or infinite."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    bad = ~np.isfinite(s)
    if s.size == 0:
        raise ValueError(f"{who} produced no scores")
    if bad.any():
        raise ValueError(f"{who} produced {int(bad.sum())} NaN/inf of {s.size} per-sample scores")
    return s


def _beats(s: np.ndarray, c: np.ndarray, direction: str, seed: int) -> tuple[bool, Interval]:
    """Whether ``s`` is better than ``c`` on the same samples, and the studentised CI of the difference s - c."""
    diff = s - c
    beaten, _ = supports_positive(diff if direction == "higher" else -diff, seed=seed)
    return beaten, studentized_mean(diff, seed=seed)


def judge(
    prop: Property,
    metric: MetricSpec,
    method: str,
    scores: np.ndarray,
    controls: dict[str, np.ndarray],
    *,
    seed: int = 0,
) -> Cell:
    """PASS iff the score's studentised 95% CI lies on the passing side of the threshold and the method beats every
    given control: the studentised 95% CI of the paired difference lies on the 'better' side of zero (a difference
    with no spread is judged by the exact sign test). Threshold and controls are judged by the same standard.

    ``controls`` maps control name (a control method, or FALSE_ALARM for the same method on the
    control model) to per-sample scores on the same samples, in the same order.
    """
    s = check_scores(scores, method)
    score = studentized_mean(s, seed=seed)
    comparisons, lost = {}, []
    for name, c in controls.items():
        c = check_scores(c, f"{name} (control)")
        if c.shape != s.shape:
            raise ValueError(f"{name} (control) has {c.size} scores for {s.size} samples")
        beaten, diff = _beats(s, c, metric.direction, seed)
        control = studentized_mean(c, seed=seed)
        comparisons[name] = {"control": control.as_dict(), "diff": diff.as_dict(), "beaten": beaten}
        if not beaten:
            lost.append(f"does not beat {name} ({control.fmt()}; diff {diff.fmt()})")
    # The CI's worse end must meet the threshold: the same standard as the control comparisons.
    meets = metric.meets(score.low if metric.direction == "higher" else score.high)
    arrow = ARROW[metric.direction]
    line = "reference" if prop.informational else "threshold"
    head = f"{method} × {metric.name} {arrow}: {score.fmt()} vs {line} {metric.threshold:g}"
    votes = not metric.no_vote
    if prop.informational or not votes:
        outcome = INFO
        kind = "informational, not graded" if prop.informational else f"reported, not voted: {metric.no_vote}"
        why = kind + (f" ({'; '.join(lost)})" if lost else f" (beats {', '.join(controls)})" if controls else "")
    elif meets and not lost:
        outcome, why = PASS, "meets the threshold and beats " + ", ".join(controls) if controls else "meets the threshold"
    else:
        outcome = FAIL
        why = "; ".join(([] if meets else ["misses the threshold (its CI reaches past it)"]) + lost)
    return Cell(
        **_base(prop, metric, method), outcome=outcome, message=f"{head}: {why}", score=score.as_dict(),
        comparisons=comparisons, scores=[float(v) for v in s], votes=votes,
    )


def validity(metric: MetricSpec, checks: tuple[Validity, ...], control_scores: dict[str, np.ndarray], *,
             seed: int = 0) -> tuple[bool, str]:
    """Whether the controls show the metric can tell good from bad in this run, with the reason."""
    reasons, ok = [], True
    for v in checks:
        bad = check_scores(control_scores[v.bad], v.bad)
        if v.kind == "separates":
            good = check_scores(control_scores[v.good], v.good)
            passed, diff = _beats(good, bad, metric.direction, seed)
            reasons.append(f"{v.describe()}: diff {diff.fmt()} ({'yes' if passed else 'NO'})")
        else:
            iv: Interval = studentized_mean(bad, seed=seed)
            # The whole CI must be on the failing side of the threshold.
            edge = iv.high if metric.direction == "higher" else iv.low
            passed = not metric.meets(edge) and not metric.meets(iv.mean)
            reasons.append(f"{v.describe()}: {iv.fmt()} vs threshold {metric.threshold:g} ({'yes' if passed else 'NO'})")
        ok = ok and passed
    return ok, "; ".join(reasons)


def property_verdict(cells: list[Cell]) -> str:
    """Overall verdict of one method on one property from its metric cells.

    ERROR if any deciding cell errored; N/A if none applies; UNDECIDED if every applicable voting metric
    was uninformative; INFO for an informational property; PASS if a strict majority of the deciding
    (applicable, informative, voting) cells pass; else FAIL.
    """
    deciding = [c for c in cells if c.decides]
    if not deciding:
        # Every applicable metric was uninformative (or reported without a vote): the run cannot decide.
        return NA if all(c.outcome == NA for c in cells) else UNDECIDED
    if any(c.outcome == ERROR for c in deciding):
        return ERROR
    if all(c.outcome == INFO for c in deciding):
        return INFO
    passed = sum(c.outcome == PASS for c in deciding)
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
    if cell.outcome in (FAIL, ERROR):
        pytest.fail(cell.message, pytrace=False)
