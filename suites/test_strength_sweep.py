"""How small a watermark can each method still localise? Run with ``pytest suites/ -m sweep``."""

import pytest

from benchmark.grading.properties import LOCALISATION
from benchmark.grading.verdict import INCONCLUSIVE, PASS, property_verdict
from benchmark.running.sweep import LevelOutcome

pytestmark = pytest.mark.sweep


class TestStrengthSweep:
    def test_localises_the_mark_at_this_strength(self, bench_method, sweep_level, sweep_bench, bench_results, record_sweep):
        outcome, grader = sweep_bench(sweep_level)
        if grader is None:
            record_sweep(outcome)
            pytest.skip(f"level {sweep_level.label} excluded: {outcome.excluded}; nothing can be localised there")
        cells = bench_results.level_cells(sweep_level.label, grader, bench_method)
        record_sweep(LevelOutcome(outcome.level, outcome.footprint, outcome.card, cells))
        verdict = property_verdict(cells)
        detail = "; ".join(c.message for c in cells)
        if verdict in ("N/A", "UNDECIDED"):
            pytest.skip(f"{bench_method} at {sweep_level.label}: {verdict}: {detail}")
        # FAIL and ERROR both fail: a crash is never a silent pass. INCONCLUSIVE passes, shown as "inconclusive"
        # (benchmark.running.teststatus reads the verdict from the recorded level).
        assert verdict in (PASS, INCONCLUSIVE), f"{LOCALISATION.name} at mark {sweep_level.label}: {verdict}: {detail}"
