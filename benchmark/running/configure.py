"""The run's command-line options, validated into one RunContext before anything is built."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _pytest.mark.expression import Expression

from benchmark.errors import BenchmarkError, ConfigError, did_you_mean
from benchmark.grading.properties import PROPERTIES
from benchmark.methods import all_methods, discover
from benchmark.option_table import PYTEST_PREFIX, SWITCHES, option_kwargs
from benchmark.options import BenchOptions
from benchmark.profiles import resolve_profile, with_arch
from benchmark.running import compare_mode
from benchmark.running.devices import worker_device
from benchmark.running.merge import shard
from benchmark.running.ray_grid import parse_executor
from benchmark.running.run_context import RUN_KEY, RunContext
from benchmark.running.store import ResultStore
from benchmark.running.sweep import check_levels, levels_for, parse_levels, parse_mark
from benchmark.running.threads import ENV_VAR as THREADS_ENV
from benchmark.running.threads import pin_torch_threads
from benchmark.running.usage import check_device, check_model_seeds, check_output_dir, check_seed
from benchmark.timelimit import check_timeout

CHANNELS_LAST = dict(zip(SWITCHES, (None, True, False), strict=True))
FUSED_INFERENCE = CHANNELS_LAST  # the same three choices: auto (on for the CPU, off on CUDA), on, off


def add_options(parser: pytest.Parser) -> None:
    """Register every --bench-* option in the plugin's option group."""
    group = parser.getgroup("shortcut-bench", "shortcut-bench: grade attribution methods")

    def shared(*names: str) -> None:  # the options python -m benchmark grade has too (benchmark.option_table)
        for name in names:
            group.addoption(PYTEST_PREFIX + name, **option_kwargs(name, pytest=True))

    shared("profile", "arch", "seed", "data", "data-root", "cache-dir", "reports-dir", "device", "methods", "threshold")
    group.addoption("--bench-shard", default=None, metavar="I/N",
                    help="grade only shard I of N of the methods (merge the records with `python -m benchmark merge`)")
    compare_mode.add_options(group)
    shared("cell-timeout")
    group.addoption("--bench-sweep-levels", default=None, metavar="AREA[@OPACITY],...",
                    help="watermark strengths of the sweep (-m sweep) as footprint areas, optionally @opacity "
                         "(default: the profile's, e.g. 0.01,0.015,0.025,0.04 on quick)")
    shared("mark", "model-seeds")
    group.addoption("--bench-executor", default="in-process", metavar="in-process|ray|auto|ray://HOST:PORT",
                    help="where the grid's cells are computed: in this process (default; -n N for pytest-xdist), a "
                         "local Ray started for the run (ray), or a Ray cluster (auto, ray://HOST:PORT); needs "
                         "pip install -e '.[ray]'")
    shared("fresh", "channels-last", "fused-inference")


def parse_thresholds(items: list[str]) -> dict[str, dict[str, float]]:
    """``["AUC=0.8", ...]`` -> {property key: {metric: value}}, validated against each metric's bounds."""
    owner = {m.name: p for p in PROPERTIES.values() for m in p.metrics}
    out: dict[str, dict[str, float]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"{item!r} is not METRIC=VALUE (e.g. AUC=0.8)")
        if name not in owner:
            raise ConfigError(f"unknown metric {name!r}; choose one of {sorted(owner)}.{did_you_mean(name, owner)}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"threshold for {name} must be a number, got {value!r}") from None
        prop = owner[name]
        prop.with_thresholds({name: number})  # raises with the valid range when out of bounds
        out.setdefault(prop.key, {})[name] = number
    return out


def is_worker(config: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist worker."""
    return hasattr(config, "workerinput")


def suites_requested(config: pytest.Config) -> bool:
    """True when a loaded conftest marks its folder as shortcut-bench suites (suites/conftest.py does)."""
    return any(getattr(p, "SHORTCUT_BENCH_SUITES", False) for p in config.pluginmanager.get_plugins())


def sweep_requested(config: pytest.Config) -> bool:
    """Whether the run's -m expression selects the strength sweep's tests; otherwise they are deselected."""
    expr = config.getoption("markexpr", "") or ""
    if "sweep" not in expr:
        return False
    try:
        # Would a test marked only "sweep" be selected? ("-m 'not sweep'" says no.)
        return bool(Expression.compile(expr).evaluate(lambda name, **kwargs: name == "sweep"))
    except Exception:  # pytest reports a malformed expression itself
        return False


def choose_methods(wanted: str | None, shard_spec: str | None = None) -> list[str]:
    """Registered methods, filtered by a comma-separated list and a shard "I/N"; ConfigError on an unknown name."""
    discover()
    names = list(all_methods())
    chosen = names
    if wanted:
        chosen = [w.strip() for w in wanted.split(",") if w.strip()]
        unknown = [w for w in chosen if w not in names]
        if unknown:
            hints = "".join(did_you_mean(u, names) for u in unknown)
            raise ConfigError(f"--bench-methods: unknown method(s) {unknown}.{hints} `python -m benchmark list methods` "
                              "lists them.")
    return shard(chosen, shard_spec) if shard_spec else chosen


def selected_methods(config: pytest.Config) -> list[str]:
    """The run's methods from --bench-methods and --bench-shard (a bad name or shard is a usage error)."""
    return _usage("", lambda: choose_methods(config.getoption("--bench-methods"), config.getoption("--bench-shard")))


def pin_threads(config: pytest.Config) -> None:
    """Share the cores, or the share $SHORTCUT_BENCH_THREADS a parent handed down, among xdist workers
    (oversubscribed torch threads on a small box run 10x slower)."""
    if is_worker(config):
        _usage("", lambda: pin_torch_threads(int(config.workerinput.get("workercount", 1))))
    elif os.environ.get(THREADS_ENV):
        _usage("", lambda: pin_torch_threads(1))


def _spread_over_gpus(config: pytest.Config) -> str | None:
    # xdist workers on a multi-GPU machine grade on cuda:{worker % n_gpus}; the model cache is keyed by
    # device type, so every worker loads the controller's trained models instead of training again.
    if not is_worker(config):
        return None
    return worker_device(config.workerinput.get("workerid"), torch.cuda.device_count())


Getter = Callable[[str], Any]  # "--bench-seed" -> its value (pytest's getoption, or the CLI's parsed arguments)


def check_usage(get: Getter, root: Path, cache: Path) -> float | None:
    """Validate seed, device, folders and cell timeout before anything is built; return the timeout override."""
    check_seed(get("--bench-seed"))
    check_device(get("--bench-device"))
    check_output_dir(cache, "--bench-cache-dir")
    check_output_dir(get("--bench-reports-dir") or root / "reports", "--bench-reports-dir")
    return check_timeout(get("--bench-cell-timeout"), "--bench-cell-timeout")


def check_executor(config: pytest.Config) -> str | None:
    """The parsed --bench-executor, refusing combinations that cannot work (before anything is built)."""
    executor = parse_executor(config.getoption("--bench-executor"))
    if executor is None:
        return None
    if int(getattr(config.option, "numprocesses", 0) or 0) > 0 or is_worker(config):
        raise ConfigError("--bench-executor ray spreads the cells over Ray workers itself: drop -n (pytest-xdist)")
    try:
        import ray  # noqa: F401  (an optional extra: only its presence is checked, and only when asked for)
    except ImportError:
        raise ConfigError("--bench-executor needs Ray: pip install -e '.[ray]'") from None
    return executor


def cache_root(get: Getter, root: Path) -> Path:
    """Where datasets/ and models/ live: --bench-cache-dir, else $SHORTCUT_BENCH_CACHE, else the root folder."""
    return Path(get("--bench-cache-dir") or os.environ.get("SHORTCUT_BENCH_CACHE") or root)


def reports_dir(get: Getter, root: Path) -> Path:
    """Where the reports are written: --bench-reports-dir, else root/reports, or root/reports/vit for --bench-arch vit
    (so a ViT run sits beside the CNN's, and each report shows both)."""
    if get("--bench-reports-dir"):
        return Path(get("--bench-reports-dir"))
    arch = get("--bench-arch")
    return root / "reports" / arch if arch == "vit" else root / "reports"


def build_options(get: Getter, root: Path, image_size: int, device: str | None = None) -> BenchOptions:
    """The run's BenchOptions from its options; ``device`` when --bench-device is unset; raises BenchmarkError."""
    cache = cache_root(get, root)
    return BenchOptions(
        seed=get("--bench-seed"),
        data_source=get("--bench-data"),
        data_root=get("--bench-data-root"),
        cache_root=cache,
        device=get("--bench-device") or device,
        cell_timeout_s=check_usage(get, root, cache),
        channels_last=CHANNELS_LAST[get("--bench-channels-last")],
        fused_inference=FUSED_INFERENCE[get("--bench-fused-inference")],
        model_seeds=check_model_seeds(get("--bench-model-seeds")),
        mark=parse_mark(get("--bench-mark"), image_size),
    )


def context_from(get: Getter, root: Path, device: str | None = None) -> RunContext:
    """A RunContext from validated options (the CLI's whole configuration; pytest adds its own checks)."""
    profile, reason = resolve_profile(get("--bench-profile"))
    profile = with_arch(profile, get("--bench-arch"))
    options = build_options(get, root, profile.image_size, device)
    ctx = RunContext(profile=profile, profile_reason=reason, options=options)
    fresh = bool(get("--bench-fresh")) or os.environ.get("SHORTCUT_BENCH_FRESH", "") not in ("", "0")
    ctx.results = ResultStore(options.cache_root, read=not fresh)
    ctx.thresholds = _prefixed("--bench-threshold: ", lambda: parse_thresholds(get("--bench-threshold") or []))
    return ctx


def _prefixed(what: str, call):
    try:
        return call()
    except BenchmarkError as exc:
        raise ConfigError(f"{what}{exc}") from None


def _usage(what: str, call):
    # Bad input ends the run before anything is built, with one line saying what to fix.
    try:
        return call()
    except BenchmarkError as exc:
        raise pytest.UsageError(f"{what}{exc}") from None


def build_context(config: pytest.Config) -> RunContext:
    """Validate every option and stash the session's RunContext; usage errors end the run before anything is built."""
    ctx = _usage("", lambda: context_from(config.getoption, config.rootpath, _spread_over_gpus(config)))
    config.stash[RUN_KEY] = ctx
    ctx.executor = _usage("", lambda: check_executor(config))
    text = config.getoption("--bench-sweep-levels")
    ctx.sweep_levels = _usage("--bench-sweep-levels: ",
                              lambda: parse_levels(text) if text else levels_for(ctx.profile.name))
    _usage("--bench-sweep-levels: ", lambda: check_levels(ctx.sweep_levels, ctx.profile.image_size))
    if sweep_requested(config) and config.getoption("--bench-compare"):
        # Compare mode promises to train nothing and grade pinned weights; no baseline pins the sweep's models.
        raise pytest.UsageError("-m sweep cannot run with --bench-compare: a baseline pins the grid's models, not the "
                                "sweep's (each level trains its own); run the sweep without --bench-compare")
    pin_threads(config)
    if config.getoption("--bench-methods") or config.getoption("--bench-shard"):
        selected_methods(config)  # fail fast, before any data is built, on an unknown name or a bad shard
    # Loads and checks --bench-compare / --bench-update-baseline files and their pinned models; the run then
    # grades those models instead of training.
    compare_mode.configure(config, ctx)
    return ctx
