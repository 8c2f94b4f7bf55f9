"""How a graded test shows in pytest: a passing test whose verdict is INCONCLUSIVE as "inconclusive" (see
:func:`benchmark.grading.verdict.assert_cell` for why it passes), and never as a strict XPASS."""

from __future__ import annotations

import pytest

from benchmark.grading.verdict import INCONCLUSIVE, USER_PROPERTY, Cell, property_verdict
from benchmark.running.sweep import SWEEP_PROPERTY, outcome_from_json

# (category counted in the summary line, progress letter, word under -v): "N inconclusive", yellow like a warning.
INCONCLUSIVE_STATUS = ("inconclusive", "?", ("INCONCLUSIVE", {"yellow": True}))
XPASS_STRICT = "[XPASS(strict)]"  # how pytest's skipping plugin fails a strict xfail test that passed


def graded_verdict(report: pytest.TestReport) -> str | None:
    """The verdict a test's report carries: its cell's outcome, or its sweep level's localisation verdict (None for
    a test that grades nothing). Read from ``report.user_properties``, which xdist sends to the controller."""
    for key, value in report.user_properties:
        if key == USER_PROPERTY:
            return Cell.from_json(value).outcome
        if key == SWEEP_PROPERTY:
            return property_verdict(outcome_from_json(value).cells)
    return None


def teststatus(report: pytest.TestReport) -> tuple | None:
    """``pytest_report_teststatus``'s answer: "inconclusive" for a passed test of an INCONCLUSIVE verdict, else None
    (pytest's own status)."""
    if report.when == "call" and report.passed and graded_verdict(report) == INCONCLUSIVE:
        return INCONCLUSIVE_STATUS
    return None


def settle_strict_xpass(report: pytest.TestReport) -> None:
    """Turn a strict XPASS of an INCONCLUSIVE verdict back into a pass (in place).

    Compare mode marks what the baseline recorded as failing xfail(strict), where a pass is an improvement. An
    INCONCLUSIVE verdict is neither: whether the cell moved is for the paired comparison with the baseline to say
    (benchmark.regression.baseline.compare), so its test stays a pass, shown as "inconclusive".
    """
    if (report.when == "call" and report.failed and str(report.longrepr).startswith(XPASS_STRICT)
            and graded_verdict(report) == INCONCLUSIVE):
        report.outcome = "passed"
        report.longrepr = None
