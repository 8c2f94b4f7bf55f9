"""Base class of every property suite: one generic test over (method × metric) cells."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from benchmark.grading.properties import Property
from benchmark.grading.verdict import Cell, assert_cell
from benchmark.running.jobs import Results


class PropertySuite:
    """Subclass with ``prop = SOME_PROPERTY`` in a ``Test*`` class; the plugin parametrises the grid."""

    prop: ClassVar[Property]

    def test_cell(self, bench_method: str, bench_metric: str, bench_results: Results, record_cell: Callable[[Cell], None],
                  bench_thresholds: dict[str, dict[str, float]]) -> None:
        prop = self.prop.with_thresholds(bench_thresholds.get(self.prop.key, {}))
        cell = bench_results.cell(prop, prop.metric(bench_metric), bench_method)
        record_cell(cell)
        assert_cell(cell)
