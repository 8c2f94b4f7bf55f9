"""Grade the same grid two ways in one process, on the same inputs, and compare time and scores.

(a) plain Quantus, as a user would write it: every (property, metric, method, model) score is one call
    of the unmodified Quantus metric with ``explain_func`` (the same Captum/Zennit method with the same
    parameters, through ``quantus_explain_func``) and no precomputed ``a_batch``, on the models as
    loaded, so Quantus explains the inputs itself in every metric call and re-explains for noise
    draws and randomised layers. Where the benchmark uses a batched adapter, (a) uses the Quantus
    class it reproduces (AUC, FaithfulnessCorrelation, RegionPerturbation, RelevanceRankAccuracy, Selectivity), and
    ROAD and IROF (no working Quantus 0.6 version on colour images) predict one step per forward pass.
(b) shortcut-bench: ``Grader.cell`` for every cell (attributions computed once per method and model,
    Quantus' re-explanations and predictions answered from content memos, model-independent maps
    reused, SmoothGrad's family aggregated from one set of noisy gradients and InternalInfluence from Integrated
    Gradients' passes (its plain half computes each on its own),
    the perturbation metrics' steps and the stability metrics' noise draws batched, channels-last
    model copies on the CPU, plus the verdict's bootstraps and the validity checks, which (a) does not do).

Both ways build each metric with the same settings (same per-sample normalisation, Spearman-or-NaN
similarity, averaged MPRT layers) and seed numpy/torch/random identically before each metric call.
Channels-last memory format is the same arithmetic in another order, so it moves scores by float
rounding, which ill-conditioned metrics amplify (RelativeInputStability divides by tiny input changes;
rank and histogram metrics reorder ties). So the score check is done against (a') plain Quantus on (b)'s
own channels-last models (untimed): that is the same computation and must agree within 1e-5 (absolute or
relative, whichever is larger) with identical verdicts (the script exits 1 when it does not). The
difference between (a) and (a') is printed per metric as the float noise of the memory format.

Printed: the wall time of each way and the ratio; the share of wall time in model forward/backward
(``benchmark.running.timing.ModelComputeTimer``); (b)'s floor, the rows its models computed (by architecture, with and
without gradients, by batch size) times the per-image cost of such a pass measured on the model as loaded at that
batch size, and wall ÷ floor; the same floor with every image at its architecture's cheapest per-image cost measured
over every way a pass can run here (as loaded, channels-last, the fused copy for passes without gradients) and every
batch size 1-256, used or not, overall, per property and per method (largest excess first): none of the ways measured
runs the same passes in less model compute, so half of it bounds a 2-worker run's grading from below, except that a
gradient pass is priced as a forward plus an input gradient, more than one that stops at an inner layer costs (a layer
method's wall can be below its floor); that cheapest floor again with the cheapest way and batch size of each kind
of pass measured after every method too, each method's passes priced at the lower of the samples taken after the
method before it and after its own cells, overall and per property, with the range those samples span (the same
pass's cost moved by a quarter within an hour on a 2-core VM, so costs measured only at the run's ends do not describe
its middle); each method's ratio as it finishes; the memos' hits. The two ways run interleaved method by method, so
load changes on a shared machine hit both.

Usage: python benchmarks/quantus_vs_bench.py [--profile quick] [--methods A,B | --methods all]
       [--metrics M,N | --metrics all] [--cache-dir DIR] [--threads 1] [--device cpu]
       [--merge-draws on|off] [--channels-last auto|on|off] [--fused-inference auto|on|off] [--bench-only]
       [--no-score-check] [--contract] [--warm]

``--warm`` has (b) keep each cell in a fresh result store (in a temporary folder), as a pytest run does, and adds (c):
the whole grid read back from that store, timed, with its cells compared to (b)'s, and the warm ratio (a)/(c), which
is reported apart from the cold ratio (a)/(b).

``--no-score-check`` leaves out (a') and the score check: the whole quick grid then takes about one hour of one core
instead of two.

``--contract`` adds every method's contract checks to (b), each architecture and split the profile covers, as
``pytest suites/`` runs them, so (b) and its floor cover the whole grid a run grades.

Default: every registered method that applies to the profile's model (the others are named and left out: they are N/A
cells the bench grades in no time) × every voting metric (the full grid); ``--metrics all`` adds the metrics that are
reported but do not vote.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import copy
import datetime as dt
import functools
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.errors import BenchmarkError
from benchmark.grading import verdict
from benchmark.grading.contract import contract_outcome
from benchmark.grading.grader import Grader, _seed_everything, grade_cell
from benchmark.grading.properties import FALSE_ALARMS, PROPERTIES
from benchmark.grading.quantus_adapters import reference_implementations
from benchmark.methods import all_methods, discover, get_method, quantus_explain_func
from benchmark.methods._variants import HELD
from benchmark.models import fused
from benchmark.options import BenchOptions
from benchmark.profiles import resolve_profile
from benchmark.running.store import ResultStore, RunStore, open_run_store
from benchmark.running.timing import (
    ModelComputeTimer,
    arch_of,
    cheapest_costs,
    fastest_floor_seconds,
    floor_seconds,
    per_image_costs,
)
from benchmark.session import prepare

TOLERANCE = 1e-5  # absolute or relative, whichever is larger
FLOOR_SIZES = (16, 32, 64, 128, 256)  # batch sizes whose per-image cost the floor may take, used or not


class CallClock:
    """Seconds spent in some functions of a module while entered (patched in, put back on exit; a call made from inside
    another counted one is not counted twice)."""

    def __init__(self, module, names: tuple[str, ...]):
        self.module, self.names = module, names
        self.seconds, self._depth, self._saved = 0.0, 0, {}

    def _timed(self, func):
        @functools.wraps(func)
        def timed(*args, **kwargs):
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self._depth -= 1
                if not self._depth:
                    self.seconds += time.perf_counter() - t0
        return timed

    def __enter__(self) -> CallClock:
        self._saved = {name: getattr(self.module, name) for name in self.names}
        for name, func in self._saved.items():
            setattr(self.module, name, self._timed(func))
        return self

    def __exit__(self, *exc) -> bool:
        for name, func in self._saved.items():
            setattr(self.module, name, func)
        return False


def _method_line(method: str, a: float, b: float, total_a: float, total_b: float, bench_only: bool) -> None:
    """One finished method: its own seconds both ways and ratio, and the running totals."""
    if bench_only:
        print(f"  {method:<28} bench {b:7.1f}s   (running total {total_b:.1f}s)", flush=True)
        return
    print(f"  {method:<28} plain {a:8.1f}s  bench {b:7.1f}s  ratio {a / b if b > 0 else float('nan'):6.2f}x   "
          f"(running totals {total_a:.1f}s / {total_b:.1f}s = {total_a / total_b if total_b > 0 else float('nan'):.2f}x)",
          flush=True)


def _floor_lines(what: str, timers: dict, cheapest: dict, by_excess: bool = False) -> None:
    """(b)'s wall, model compute, floor at the cheapest measured per-image cost, wall ÷ floor and wall − floor per
    ``what`` (a property or a method), largest wall − floor first when ``by_excess``."""
    print(f"    per {what}, (b): wall | model compute | floor at the cheapest way and batch size | wall / floor | "
          "wall - floor")
    rows = [(key, timer, fastest_floor_seconds(timer.passes, cheapest)) for key, timer in timers.items()]
    for key, timer, floor in sorted(rows, key=lambda r: r[2] - r[1].wall) if by_excess else rows:
        ratio = f"{timer.wall / floor:.2f}" if floor > 0 else "— (no model passes)"
        print(f"      {key:<26} {timer.wall:7.1f}s | {timer.model:7.1f}s | {floor:7.1f}s | {ratio:>4} | "
              f"{timer.wall - floor:6.1f}s")


def _ways(model: torch.nn.Module) -> dict:
    """The ways a pass of ``model``'s architecture can run here: as loaded, channels-last (unless it is loaded so), and
    its fused copy (no gradients); a way that cannot be made is left out."""
    ways = {"as loaded": (model, True)}
    first = next(model.parameters())
    if first.dim() == 4 and not first.is_contiguous(memory_format=torch.channels_last):
        ways["channels-last"] = (copy.deepcopy(model).to(memory_format=torch.channels_last), True)
    try:
        ways["fused"] = (fused.fuse_module(model), False)
    except Exception as exc:  # an architecture TorchScript cannot freeze: its floor is taken without a fused way
        print(f"    {arch_of(model)}: no fused way ({type(exc).__name__})")
    return ways


def _floor_models(grader, contract: bool) -> list:
    """The models whose passes (b) makes: the biased model, and with ``--contract`` every split's graded copy."""
    models = [grader.store.models["biased"]]
    return models + ([grader.store.graded(m) for splits in grader.bench.contract_models().values()
                      for m in splits.values()] if contract else [])


def fastest_of(first: tuple[dict, dict], then: tuple[dict, dict]) -> tuple[dict, dict]:
    """Two :func:`cost_tables` results merged, each cost the lower of the two where both measured it: the floor is the
    fastest the machine ran a pass in this run, before the grid or after it."""
    merged = []
    for a, b in zip(first, then, strict=True):
        out = {arch: dict(costs) for arch, costs in a.items()}
        for arch, costs in b.items():
            mine = out.setdefault(arch, {})
            for key, seconds in costs.items():
                mine[key] = min(seconds, mine.get(key, float("inf")))
        merged.append(out)
    return merged[0], merged[1]


def cost_tables(models: list, image_shape: tuple, sizes) -> tuple[dict, dict, dict]:
    """(as loaded, cheapest, picks) per-image costs of each architecture in ``models`` (the first model of each one
    counts): {arch: costs of the model as loaded}, {arch: {gradients on: the cheapest cost over every way and size}},
    and {arch: {gradients on: (the way, the batch size) that cost was measured at}}."""
    as_run, tables, picks = {}, collections.defaultdict(list), {}
    for model in models:
        arch = arch_of(model)
        if arch in as_run:
            continue
        for forward, grad in _ways(model).values():
            costs = per_image_costs(forward, image_shape, sizes, grad=grad)
            tables[arch].append(costs)
            as_run.setdefault(arch, costs)
            for (with_grad, size), seconds in costs.items():
                if seconds < picks.get(arch, {}).get(with_grad, (None, 0, float("inf")))[2]:
                    picks.setdefault(arch, {})[with_grad] = (forward, size, seconds)
    cheapest = cheapest_costs(tables)
    return as_run, cheapest, {arch: {g: pick[:2] for g, pick in kinds.items()} for arch, kinds in picks.items()}


def sample_cheapest(picks: dict, image_shape: tuple) -> dict:
    """{arch: {gradients on: seconds per image}}: each architecture's cheapest way and batch size (``picks`` from
    :func:`cost_tables`) measured again now."""
    return {arch: {grad: per_image_costs(forward, image_shape, [size], grad=grad)[(grad, size)]
                   for grad, (forward, size) in kinds.items()} for arch, kinds in picks.items()}


def sampled_floor(passes: list, samples: list[dict]) -> float:
    """The floor of ``passes[i]`` (method i's passes) with each image at its architecture's cheapest cost, the lower of
    the two samples either side of method i (``samples[i]``, ``samples[i + 1]``)."""
    return sum(fastest_floor_seconds(mine, fastest_of(({}, samples[i]), ({}, samples[i + 1]))[1])
               for i, mine in enumerate(passes))


def _sampled_lines(timer_b, by_method: dict, by_property: dict, by_pair: dict, samples: list[dict]) -> float:
    """(b)'s wall ÷ floor with the floor sampled through the run, overall and per property (``by_pair``: {(method,
    property): the passes of that method's cells of that property}), and the samples' range; that floor."""
    methods = list(by_method)
    total = sampled_floor([by_method[m].passes for m in methods], samples)
    spread = ", ".join(f"{arch} {'with gradients' if grad else 'forward'} {1e3 * min(lo):.3f}-{1e3 * max(lo):.3f} ms"
                       for arch in samples[0] for grad in samples[0][arch]
                       for lo in [[s[arch][grad] for s in samples]])
    print(f"    floor sampled through the run (each method's passes at its architecture's cheapest way and batch size, "
          f"measured again after the method before it and after its own cells, the lower of the two; {len(samples)} "
          f"samples: {spread}): {total:.1f}s; wall / floor = {timer_b.wall / total:.2f}" if total > 0 else
          "    floor sampled through the run: no model passes")
    for prop in by_property:
        floor = sampled_floor([by_pair.get((m, prop), collections.Counter()) for m in methods], samples)
        wall = by_property[prop].wall
        print(f"      {prop:<26} wall {wall:7.1f}s | sampled floor {floor:7.1f}s | wall / floor "
              f"{f'{wall / floor:.2f}' if floor > 0 else '— (no model passes)'}")
    return total


def _fresh_store(bench) -> RunStore:
    """An empty result store's view of ``bench``'s run, in a temporary folder removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="quantus_vs_bench_store_"))
    atexit.register(shutil.rmtree, root, True)
    return open_run_store(ResultStore(root), bench)


def _warm_lines(store: RunStore, grader, cells: list, names: list[str], cold: dict, plain_wall: float | None) -> None:
    """(c): the grid read back from ``store`` as a warm run does (a cell it holds none of is graded again), timed,
    with its cells compared to (b)'s and the warm ratio against plain Quantus' wall."""
    regraded, t0 = 0, time.perf_counter()
    warm = {}
    for method in names:
        for prop, metric in cells:
            cell = store.stored_cell(prop, metric, method)
            if cell is None:  # not storable (an error, a cell that depends on more than its inputs): graded again
                regraded += 1
                cell = grade_cell(grader, prop, metric, method)
            warm[(prop.key, metric.name, method)] = cell
    wall = time.perf_counter() - t0
    differ = [k for k, cell in warm.items() if cell.to_json() != cold[k].to_json()]
    print(f"(c) shortcut-bench warm: wall {wall:.1f}s, {len(warm) - regraded} cells read from the result store "
          f"(written by (b)), {regraded} graded again; {len(differ)} differ from (b)'s cells"
          + (f": {', '.join('/'.join(k) for k in differ[:5])}" if differ else ""))
    if plain_wall is not None:
        print(f"warm speed-up (a)/(c): {plain_wall / wall:.0f}x (not the cold ratio: (c) grades nothing it holds)")


def quantus_user_scores(bench, prop, metric, method: str, model, seed: int) -> np.ndarray:
    """One plain Quantus metric call with explain_func and a_batch=None."""
    s_x, s_y, s_masks = _sample(bench, prop)
    prior = bench.world.watermark_prior() if get_method(method).capabilities.prior else None
    signed = quantus_explain_func(method, level=bench.profile.method_level, seed=seed, prior=prior)
    oracle = get_method(method).capabilities.oracle

    def explain_abs(model, inputs, targets, **kwargs):
        return np.abs(signed(model, inputs, targets, **kwargs))

    def call(sel):
        _seed_everything(seed)
        m = metric.build(bench.profile, seed)
        kwargs = {"masks": s_masks[sel, 0] > 0} if oracle else {}
        model_device = str(next(model.parameters()).device)
        out = m(model=model, x_batch=s_x[sel], y_batch=s_y[sel], a_batch=None, s_batch=s_masks[sel],
                explain_func=explain_abs, explain_func_kwargs=kwargs, device=model_device, batch_size=len(sel))
        return metric.postprocess(out)

    return call(np.arange(len(s_x)))


def _plain(bench, prop, metric, method: str, model, seed: int) -> np.ndarray | str:
    try:
        # A user's Quantus explains each method on its own: no sibling's held maps (SmoothGrad's family) either way.
        with reference_implementations(), HELD.paused():
            return quantus_user_scores(bench, prop, metric, method, model, seed)
    except Exception as exc:  # compared below: both ways must fail alike
        return f"{type(exc).__name__}: {exc}"


_SAMPLES: dict[tuple, tuple] = {}


def _sample(bench, prop):
    # The images the benchmark grades for this property (a prefix of its graded set).
    key = (id(bench), prop.map_only)
    if key not in _SAMPLES:
        s = Grader(bench).images.samples(prop)
        _SAMPLES[key] = (s.x, s.y, s.masks)
    return _SAMPLES[key]


def plain_verdict(prop, metric_name: str, method: str, table: dict, seed: int) -> str | None:
    """The verdict judged from plain Quantus' scores in ``table`` exactly as Grader.cell judges (None: not run)."""
    metric = prop.metric(metric_name)

    def scores(job_method: str, model_key: str = "biased") -> np.ndarray:
        out = table[(prop.key, metric_name, job_method, model_key)]
        if isinstance(out, str):
            raise RuntimeError(out)
        return verdict.check_scores(out, f"{metric_name} on {job_method}", collapse=bool(metric.collapse))

    try:
        caps = get_method(method).capabilities
        controls = {c: scores(c) for c in prop.beat if c != method}
        if prop.false_alarm and not caps.oracle:
            controls.update({name: scores(method, arm) for arm, name in FALSE_ALARMS.items()})
        anchors = verdict.Anchors(prop.negative, prop.positive, scores(prop.negative), scores(prop.positive))
        return verdict.judge(prop, metric, method, scores(method), controls, anchors, seed=seed).outcome
    except KeyError:
        return None
    except Exception:
        return verdict.ERROR


def jobs_for(prop, metric, method: str, num_classes: int) -> list[tuple[str, str]]:
    """The (method, model) score arrays the grader needs for one cell, controls and validity included."""
    caps = get_method(method).capabilities
    if prop.not_applicable(caps) or num_classes < metric.min_classes:
        return []  # an N/A cell: the grader scores nothing
    out = [(method, "biased")]
    out += [(c, "biased") for c in prop.beat if c != method]
    if prop.false_alarm and not caps.oracle:
        out += [(method, arm) for arm in FALSE_ALARMS]
    out += [(prop.negative, "biased"), (prop.positive, "biased")]
    return out


def grid_of(args) -> tuple:
    """The profile ``args.profile`` names and why it applies, the methods ``args.methods`` names and the (property,
    metric) cells ``args.metrics`` names; exits with what to fix for an unknown method or metric."""
    discover()
    profile, reason = resolve_profile(args.profile)
    names = list(all_methods()) if args.methods == "all" else args.methods.split(",")
    try:
        for n in names:
            get_method(n)  # a clear error for an unknown name, before any work
    except BenchmarkError as exc:
        sys.exit(f"--methods: {exc}")
    wanted = set(args.metrics.split(",")) if args.metrics and args.metrics != "all" else None
    cells = [(p, m) for p in PROPERTIES.values() for m in p.metrics
             if (m.name in wanted if wanted is not None else args.metrics == "all" or not m.no_vote)]
    if not cells:
        sys.exit(f"--metrics {args.metrics!r} names no metric; choose from "
                 f"{sorted(m.name for p in PROPERTIES.values() for m in p.metrics)}")
    return profile, reason, names, cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--methods", default="all", help="comma-separated, or 'all' (default)")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metric names, or 'all' (default: every voting metric)")
    parser.add_argument("--cache-dir", default=os.environ.get("SHORTCUT_BENCH_CACHE", "."))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as per xdist worker)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bench-only", action="store_true",
                        help="time (b) alone (e.g. the full grid on a GPU, where (a) would take hours)")
    parser.add_argument("--merge-draws", choices=("on", "off"), default="on",
                        help="(b) explains each stability metric's noise draws in one batched call (default on)")
    parser.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                        help="(b) runs channels-last copies of the models (auto: on the CPU only)")
    parser.add_argument("--fused-inference", choices=("auto", "on", "off"), default="auto",
                        help="(b)'s no-grad forwards through fused copies of the models (auto: on the CPU only)")
    parser.add_argument("--no-score-check", action="store_true",
                        help="time (a) and (b) only: skip (a'), plain Quantus again on (b)'s models (untimed, as long "
                             "as (a)), and the score and verdict check that needs it")
    parser.add_argument("--warm", action="store_true",
                        help="(b) keeps each cell in a fresh result store, as a pytest run does, and (c) reads the "
                             "whole grid back from it, timed: the warm ratio (a)/(c), reported apart from the cold one")
    parser.add_argument("--contract", action="store_true",
                        help="(b) also runs every method's contract checks (each architecture and split the profile "
                             "covers), as the pytest grid does")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile, reason, names, cells = grid_of(args)

    t0 = time.perf_counter()
    # One training seed: plain Quantus scores one model's images, so the bench grades that model's whole image budget
    # too (the profile's default several seeds would split it and judge over seeds, which plain Quantus cannot).
    bench = prepare(profile, BenchOptions(cache_root=Path(args.cache_dir), device=args.device, seed=args.seed,
                                          model_seeds=1), progress=False)
    build = time.perf_counter() - t0
    # A method that does not apply to the model (a transformer method on a CNN) is an N/A cell the bench grades in no
    # time while plain Quantus still runs it: timing it would inflate the ratio, so it is left out and named.
    skipped = {n: why for n in names if (why := get_method(n).unsupported(bench.biased.model))}
    for n, why in skipped.items():
        print(f"{n}: left out, N/A on this model ({why})")
    names = [n for n in names if n not in skipped]
    switch = {"auto": None, "on": True, "off": False}
    grader = Grader(bench, seed=args.seed, merge_draws=switch[args.merge_draws],
                    channels_last=switch[args.channels_last], fused=switch[args.fused_inference])
    # Warm-up outside both clocks: sample set selection, lazy imports (Quantus takes seconds), first kernels.
    import benchmark.grading.quantus_compat  # noqa: F401

    x, y = grader.images.sample_set.x, grader.images.sample_set.y
    quantus_explain_func("Saliency", level=profile.method_level)(bench.biased.model, x[:2], y[:2])

    # The per-image costs are measured before the grid and again after it, each the lower of the two: a machine in a
    # slower phase at one end (they ran 31 % apart an hour apart here) must not raise the floor.
    before = cost_tables(_floor_models(grader, args.contract), tuple(x.shape[1:]), [2**k for k in range(9)])
    # And the cheapest way of each kind again after every method (outside every clock): a floor under the grid's own
    # conditions, each method's passes priced at the samples either side of it (with plain Quantus, the one before
    # also precedes the method's plain half).
    samples, picks = [before[1]], before[2]
    by_pair: dict[tuple[str, str], collections.Counter] = {}  # (method, property): (b)'s passes
    loaded = {"biased": bench.biased.model, "control": bench.control.model, "absent": bench.absent.model}
    same_models = all(grader.store.models[k] is m for k, m in loaded.items())
    plain: dict[tuple, np.ndarray | str] = {}  # (a): timed, on the models as loaded
    reference: dict[tuple, np.ndarray | str] = {}  # (a'): untimed, on (b)'s own models
    timer_a, timer_b = ModelComputeTimer(), ModelComputeTimer()
    # (b)'s verdicts: each cell's bootstraps and tests, and its anchors' validity, which (a) does not do.
    verdicts_b = CallClock(verdict, ("judge", "anchor_validity"))
    outcomes: dict[tuple, str] = {}  # (b)'s verdict per cell
    by_property: dict[str, ModelComputeTimer] = {}  # (b)'s time and passes per property
    by_method: dict[str, ModelComputeTimer] = {}  # and per method
    contracts: collections.Counter = collections.Counter()  # (b)'s contract checks by status (--contract)
    store = _fresh_store(bench) if args.warm else None
    cold: dict[tuple, object] = {}  # (b)'s cells (--warm), for (c)'s comparison
    print("per method, as the run goes (a cut run still gives each finished method's ratio):", flush=True)
    for method in names:
        jobs = [((prop.key, metric.name, job_method, model_key), prop, metric, job_method, model_key)
                for prop, metric in (cells if not args.bench_only else ())
                for job_method, model_key in jobs_for(prop, metric, method, grader.num_classes)]
        a_before = timer_a.wall
        with timer_a:
            for key, prop, metric, job_method, model_key in jobs:
                if key not in plain:
                    plain[key] = _plain(bench, prop, metric, job_method, loaded[model_key], args.seed)
        for key, prop, metric, job_method, model_key in jobs if not (same_models or args.no_score_check) else ():
            if key not in reference:
                reference[key] = _plain(bench, prop, metric, job_method, grader.store.models[model_key], args.seed)
        b_before = timer_b.wall
        passes_before = {key: collections.Counter(timer.passes) for key, timer in by_property.items()}
        with timer_b, by_method.setdefault(method, ModelComputeTimer()), verdicts_b:
            for prop, metric in cells:
                with by_property.setdefault(prop.key, ModelComputeTimer()):
                    compute = functools.partial(grade_cell, grader, prop, metric, method)
                    cell = compute() if store is None else store.cell(prop, metric, method, compute)
                    outcomes[(prop.key, metric.name, method)] = cell.outcome
                    cold[(prop.key, metric.name, method)] = cell
            for arch, splits in grader.bench.contract_models().items() if args.contract else ():
                with by_property.setdefault("method_contract", ModelComputeTimer()):
                    for split in splits:
                        contracts[contract_outcome(grader, method, arch, split).status] += 1
        _method_line(method, timer_a.wall - a_before, timer_b.wall - b_before, timer_a.wall, timer_b.wall,
                     args.bench_only)
        for key, timer in by_property.items():
            by_pair[(method, key)] = timer.passes - passes_before.get(key, collections.Counter())
        samples.append(sample_cheapest(picks, tuple(x.shape[1:])))

    diffs: dict[str, float] = {}
    layout_noise: dict[str, float] = {}
    mismatched: list[str] = []
    for (prop_key, metric_name, method, model_key), a in (reference or plain).items() if not args.no_score_check else ():
        prop = PROPERTIES[prop_key]
        metric = prop.metric(metric_name)
        try:
            b = grader.runner.scores(prop, metric, method, model_key)
        except Exception as exc:
            b = f"{type(exc).__name__}: {exc}"
        label = f"{metric_name}/{method}/{model_key if model_key == 'biased' else FALSE_ALARMS[model_key]}"
        if isinstance(a, str) or isinstance(b, str):
            if not (isinstance(a, str) and isinstance(b, str)):
                mismatched.append(f"{label}: plain {'error' if isinstance(a, str) else 'ok'}, "
                                  f"bench {'error' if isinstance(b, str) else 'ok'} ({a if isinstance(a, str) else b})")
            continue
        a = np.asarray(a, dtype=np.float64)
        both_nan = np.isnan(a) & np.isnan(b)
        d = np.where(both_nan, 0.0, np.abs(a - b))
        diffs[metric_name] = max(diffs.get(metric_name, 0.0), float(np.nanmax(d, initial=0.0)))
        if not np.all(d <= np.maximum(TOLERANCE, TOLERANCE * np.abs(a))):
            mismatched.append(f"{label}: max |diff| {float(np.nanmax(d)):.3g}")
        p = plain[(prop_key, metric_name, method, model_key)]
        if reference and not isinstance(p, str):
            layout_noise[metric_name] = max(layout_noise.get(metric_name, 0.0),
                                            float(np.max(np.abs(np.asarray(p, dtype=np.float64) - a))))

    verdicts_differ = [f"{prop_key}/{metric_name}/{method}: bench {outcome}, plain Quantus {plain_outcome}"
                       for (prop_key, metric_name, method), outcome in outcomes.items() if outcome != "N/A"
                       for plain_outcome in [plain_verdict(PROPERTIES[prop_key], metric_name, method, reference or plain,
                                                           args.seed)]
                       if plain_outcome is not None and plain_outcome != outcome] \
        if not (args.bench_only or args.no_score_check) else []
    sizes = {size for _, _, size in timer_b.passes}
    buckets = sorted({2 ** round(np.log2(size)) for size in sizes} | set(FLOOR_SIZES))
    costs, cheapest = fastest_of(before[:2],
                                 cost_tables(_floor_models(grader, args.contract), tuple(x.shape[1:]), buckets)[:2])
    floor_b = floor_seconds(timer_b.passes, costs)
    fastest_b = fastest_floor_seconds(timer_b.passes, cheapest)
    images = {g: sum(n * size for (_, gg, size), n in timer_b.passes.items() if gg == g) for g in (False, True)}
    uncosted = sorted({arch for arch, _, _ in timer_b.passes} - set(cheapest))

    load = os.getloadavg()
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}  {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, torch threads "
          f"{torch.get_num_threads()}, device {bench.device}"
          f"{' (' + torch.cuda.get_device_name(bench.device) + ')' if bench.device.type == 'cuda' else ''}")
    print(f"profile {profile.name} ({reason}), {len(grader.images.sample_set.x)} graded images, world ready in {build:.1f}s")
    print(f"grid: {len(names)} methods x {len(cells)} metrics = {len(names) * len(cells)} cells "
          f"({len(plain) or 'uncompared'} distinct score arrays); methods: {','.join(names)}")
    print(f"(a) plain Quantus:  {timer_a.summary() if not args.bench_only else 'skipped (--bench-only)'}")
    print(f"(b) shortcut-bench: {timer_b.summary()}")
    print(f"    verdicts (each cell's bootstraps and tests, and its anchors' validity; (a) does none): "
          f"{verdicts_b.seconds:.2f}s of (b)'s wall")
    print(f"    explanation memo: {grader.store.memo.hits} hits, {grader.store.memo.misses} misses, {grader.store.memo.batched} answered "
          f"from batched noise draws; prediction memo: {grader.runner.predictions.hits} hits, {grader.runner.predictions.misses} "
          f"misses; noise draws batched per metric: {'on' if grader.runner.merge_draws else 'off'}; channels-last models: "
          f"{'on' if grader.channels_last else 'off'}")
    print(f"    floor: {images[False]} images forward without gradients + {images[True]} with (forward and input "
          f"gradient), each at its batch size's measured per-image cost = {floor_b:.1f}s; wall / floor = "
          f"{timer_b.wall / floor_b:.2f}" if floor_b > 0 else "    floor: no model passes")
    if fastest_b > 0:
        print(f"    floor at the cheapest way and batch size measured (every image at its architecture's cheapest "
              f"per-image cost: as loaded, channels-last or fused, batch {buckets[0]}-{buckets[-1]}): {fastest_b:.1f}s; "
              f"wall / floor = {timer_b.wall / fastest_b:.2f}; split evenly over 2 workers {fastest_b / 2:.1f}s")
    if uncosted:
        print(f"    not in the floor (no cost measured): passes of {', '.join(uncosted)}")
    if args.contract:
        print(f"    contract checks: {dict(contracts)}")
    _floor_lines("property", by_property, cheapest)
    sampled = _sampled_lines(timer_b, by_method, by_property, by_pair, samples)
    _floor_lines("method", by_method, cheapest, by_excess=True)
    for arch, mine in costs.items():
        print(f"    {arch} per-image cost (ms) as loaded, by batch size, forward | forward+backward: " + ", ".join(
            f"{size}: {1e3 * mine[(False, size)]:.2f} | {1e3 * mine[(True, size)]:.2f}" for size in buckets)
              + f"; cheapest {1e3 * cheapest[arch][False]:.3f} | {1e3 * cheapest[arch][True]:.3f}")
    if store is not None:
        _warm_lines(store, grader, cells, names, cold, None if args.bench_only else timer_a.wall)
    if args.bench_only:
        return 0
    print(f"speed-up (a)/(b): {timer_a.wall / timer_b.wall:.2f}x")
    if sampled > 0:
        # (b) at its floor; past it only fewer model rows, or rows cheaper than the floor prices them (the region way's,
        # priced as whole forwards), go (benchmarks/repeated_rows.py measures the rows computed twice).
        print(f"plain Quantus over (b)'s sampled floor: {timer_a.wall / sampled:.2f}x ((b) at its floor; fewer rows, "
              "or the region way's passes, which cost less than the floor prices them, go past it)")
    if args.no_score_check:
        print("scores and verdicts: not checked (--no-score-check)")
        return 0
    against = "(a') plain Quantus on (b)'s channels-last models" if reference else "(a)"
    print(f"largest |score difference| per metric, (b) vs {against} (tolerance {TOLERANCE:g})"
          + ("; memory-format float noise, (a) vs (a'):" if reference else ":"))
    for name, d in diffs.items():
        print(f"  {name:<24} {d:.3g}" + (f"   {layout_noise.get(name, 0.0):.3g}" if reference else ""))
    print(f"verdicts: {len(outcomes) - sum(o == 'N/A' for o in outcomes.values())} graded cells, "
          f"{len(verdicts_differ)} differ from the verdicts of plain Quantus' scores")
    if mismatched or verdicts_differ:
        print("MISMATCH:\n  " + "\n  ".join(mismatched + verdicts_differ))
        return 1
    print("scores and verdicts match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
