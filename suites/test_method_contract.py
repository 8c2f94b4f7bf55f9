"""Method contract suite: every registered attribution method × every architecture × both splits.

Each test asserts one :func:`benchmark.grading.contract.contract_outcome`: :func:`benchmark.grading.contract.check_method` on the
run's ``split`` model of ``arch`` (the trained models for the profile's architecture, seeded untrained ones for
the others), checked on the copy the grader explains (channels-last and fused as the run is), explaining the first 8
graded stamped images with the model's own decisions as targets, within the profile's per-cell time limit.
The ``bench_results`` fixture gives it (computed by the Ray workers under
``--bench-executor``, here otherwise).

Methods come from the registry through the plugin's ``bench_method`` parametrisation (honouring
``--bench-methods``), so a method added as a module in ``benchmark/methods/``, an entry point or
``$SHORTCUT_BENCH_METHODS`` is checked without editing this file.
"""

from __future__ import annotations

import pytest

from benchmark.grading.contract import NOT_COVERED, OK
from benchmark.models.arch import ARCHITECTURES


@pytest.mark.parametrize("split", ["biased", "control"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
class TestMethodContract:
    def test_contract(self, bench_method, arch, split, bench_results):
        outcome = bench_results.contract(bench_method, arch, split)
        if outcome.status == NOT_COVERED:
            pytest.skip(outcome.detail)
        assert outcome.status == OK, outcome.detail
