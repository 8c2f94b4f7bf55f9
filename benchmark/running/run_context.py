"""The state one pytest session shares between the plugin and compare mode (one object, one stash key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from benchmark.grading.grader import Grader
from benchmark.options import BenchOptions, MarkLevel
from benchmark.profiles import Profile
from benchmark.running.store import ResultStore, RunStore
from benchmark.session import Bench


@dataclass
class RunContext:
    """What the session resolved from its options and what it built (profile, options, world, grader, modes)."""

    profile: Profile
    profile_reason: str
    options: BenchOptions
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)  # {property key: {metric: value}}
    bench: Bench | None = None  # once built
    build_seconds: float | None = None
    grader: Grader | None = None  # this process's, once a suite asked for a cell
    # benchmark.running.compare_mode.CompareMode (always set; idle without its options) and, on the controller only,
    # benchmark.running.collector.CellCollector: both modules import this one, so they are not named here.
    compare: Any = None
    collector: Any = None
    sweep_levels: tuple[MarkLevel, ...] = ()  # the strength sweep's levels, weakest first
    sweep: dict[str, tuple[Any, Grader | None]] = field(default_factory=dict)  # level label -> (LevelOutcome, Grader)
    executor: str | None = None  # None: cells graded in the test process; else where Ray runs (benchmark.running.ray_grid)
    precomputed: dict[tuple, Any] = field(default_factory=dict)  # job key -> Cell or ContractOutcome from Ray workers
    results: ResultStore | None = None  # the persistent result store (None: not used)
    run_stores: dict[str, RunStore] = field(default_factory=dict)  # world (GRID or a level label) -> its view


RUN_KEY = pytest.StashKey[RunContext]()


def context(config: pytest.Config) -> RunContext:
    """The session's run context (set in the plugin's pytest_configure)."""
    return config.stash[RUN_KEY]
