"""The state one pytest session shares between the plugin and compare mode (one object, one stash key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from benchmark.options import BenchOptions
from benchmark.profiles import Profile


@dataclass
class RunContext:
    """What the session resolved from its options and what it built (profile, options, world, grader, modes)."""

    profile: Profile
    profile_reason: str
    options: BenchOptions
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)  # {property key: {metric: value}}
    bench: Any = None  # benchmark.session.Bench, once built
    build_seconds: float | None = None
    grader: Any = None  # benchmark.grading.Grader of this process, once a suite asked for it
    compare: Any = None  # benchmark.compare_mode.CompareMode (always set; idle without its options)
    collector: Any = None  # benchmark.plugin.CellCollector, on the controller only
    sweep_levels: tuple = ()  # the strength sweep's MarkLevels (benchmark.sweep), weakest first
    sweep: dict = field(default_factory=dict)  # strength-sweep level label -> (LevelOutcome, Grader or None)
    executor: str | None = None  # None: cells graded in the test process; else where Ray runs (benchmark.ray_grid)
    precomputed: dict = field(default_factory=dict)  # (world, property key, metric, method) -> Cell graded by Ray workers


RUN_KEY = pytest.StashKey[RunContext]()


def context(config: pytest.Config) -> RunContext:
    """The session's run context (set in the plugin's pytest_configure)."""
    return config.stash[RUN_KEY]


def has_context(config: pytest.Config) -> bool:
    """Whether the plugin configured this session."""
    return RUN_KEY in config.stash
