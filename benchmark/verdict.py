"""Turn per-sample scores into PASS / FAIL / ERROR / N/A cells, and one assertion for all suites."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from benchmark.properties import ARROW, MetricSpec, Property, Validity
from benchmark.stats import Interval, bootstrap_mean, paired_difference

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
        return self.outcome != NA and self.informative is not False


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


def judge(
    prop: Property,
    metric: MetricSpec,
    method: str,
    scores: np.ndarray,
    controls: dict[str, np.ndarray],
    *,
    seed: int = 0,
) -> Cell:
    """PASS iff the mean meets the threshold and the method beats every given control with a paired
    bootstrap 95% CI of the difference that lies entirely on the 'better' side of zero.

    ``controls`` maps control name (a control method, or FALSE_ALARM for the same method on the
    control model) to per-sample scores on the same samples, in the same order.
    """
    s = check_scores(scores, method)
    score = bootstrap_mean(s, seed=seed)
    comparisons, lost = {}, []
    for name, c in controls.items():
        c = check_scores(c, f"{name} (control)")
        diff = paired_difference(s, c, seed=seed)
        # Lower bound of the 'better' difference must exceed zero.
        lo = diff.low if metric.direction == "higher" else -diff.high
        beaten = bool(lo > 0)
        control = bootstrap_mean(c, seed=seed)
        comparisons[name] = {"control": control.as_dict(), "diff": diff.as_dict(), "beaten": beaten}
        if not beaten:
            lost.append(f"does not beat {name} ({control.fmt()}; diff {diff.fmt()})")
    meets = metric.meets(score.mean)
    arrow = ARROW[metric.direction]
    line = "reference" if prop.informational else "threshold"
    head = f"{method} × {metric.name} {arrow}: {score.fmt()} vs {line} {metric.threshold:g}"
    if prop.informational:
        outcome = INFO
        why = "informational, not graded" + (f" ({'; '.join(lost)})" if lost else
                                            f" (beats {', '.join(controls)})" if controls else "")
    elif meets and not lost:
        outcome, why = PASS, "meets the threshold and beats " + ", ".join(controls) if controls else "meets the threshold"
    else:
        outcome = FAIL
        why = "; ".join(([] if meets else ["misses the threshold"]) + lost)
    return Cell(
        **_base(prop, metric, method), outcome=outcome, message=f"{head}: {why}", score=score.as_dict(),
        comparisons=comparisons, scores=[float(v) for v in s],
    )


def validity(metric: MetricSpec, checks: tuple[Validity, ...], control_scores: dict[str, np.ndarray], *,
             seed: int = 0) -> tuple[bool, str]:
    """Whether the controls show the metric can tell good from bad in this run, with the reason."""
    reasons, ok = [], True
    for v in checks:
        bad = check_scores(control_scores[v.bad], v.bad)
        if v.kind == "separates":
            good = check_scores(control_scores[v.good], v.good)
            diff = paired_difference(good, bad, seed=seed)
            lo = diff.low if metric.direction == "higher" else -diff.high
            passed = lo > 0
            reasons.append(f"{v.describe()}: diff {diff.fmt()} ({'yes' if passed else 'NO'})")
        else:
            iv: Interval = bootstrap_mean(bad, seed=seed)
            # The whole CI must be on the failing side of the threshold.
            edge = iv.high if metric.direction == "higher" else iv.low
            passed = not metric.meets(edge) and not metric.meets(iv.mean)
            reasons.append(f"{v.describe()}: {iv.fmt()} vs threshold {metric.threshold:g} ({'yes' if passed else 'NO'})")
        ok = ok and passed
    return ok, "; ".join(reasons)


def property_verdict(cells: list[Cell]) -> str:
    """Overall verdict of one method on one property from its metric cells.

    ERROR if any deciding cell errored; N/A if none applies; UNDECIDED if every applicable metric
    was uninformative; INFO for an informational property; PASS if a strict majority of the deciding
    (applicable, informative) cells pass; else FAIL.
    """
    deciding = [c for c in cells if c.decides]
    if not deciding:
        # Every applicable metric was uninformative: the run cannot decide this property.
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
