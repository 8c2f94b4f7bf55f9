"""Plain against fused inference (benchmark.models.fused) where the grid really runs it, side by side.

Three measurements on the run's own models (the grader's copies: channels-last on the CPU, as a run makes them),
each printing plain, fused and plain ÷ fused, with plain and fused interleaved repetition by repetition so that load
on a shared machine hits both:

1. forward passes without gradients: seconds per image at the batch sizes the methods and metrics use (16-256), and
   the largest |logit difference| between the two on graded-size batches of test images;
2. the maps of the perturbation methods on the first ``--images`` graded images (64, the prefix the non-map
   properties grade; a run computes maps for all of them, 362 on quick) (Occlusion, FeatureAblation,
   FeaturePermutation, ShapleyValueSampling, KernelShap, Lime by default), and the largest |map difference|;
3. a perturbation metric's scores for one method on the biased model (FaithfulnessCorrelation and
   RegionPerturbation on Saliency by default: cheap maps, so the cell's time is the metric's forward passes), each
   repetition with an empty prediction memo; the maps are computed once, outside the clocks.

Fusing each model and measuring each path's fastest chunk happen once per process, outside the clocks; their one-off
cost is printed. Times are the fastest of ``--repeats`` (the least disturbed by other processes); the median is
printed too. The load average is printed before and after.

Usage: python benchmarks/fused_forward.py [--cache-dir /tmp/qc] [--profile quick] [--threads 2] [--repeats 5]
       [--images 64] [--methods A,B] [--metrics FaithfulnessCorrelation,RegionPerturbation] [--metric-method Saliency]
       [--skip-forward] [--skip-maps] [--skip-metrics]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.grading.grader import Grader, MetricRunner
from benchmark.grading.properties import PROPERTIES
from benchmark.methods import discover, explain, get_method
from benchmark.methods._chunked import no_grad_forward
from benchmark.models import fused as fusion
from benchmark.options import BenchOptions
from benchmark.profiles import resolve_profile
from benchmark.session import prepare

SIZES = (16, 32, 64, 128, 256)
METHODS = "Occlusion,FeatureAblation,FeaturePermutation,ShapleyValueSampling,KernelShap,Lime"


def _load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def _row(label: str, plain: list[float], fused: list[float], unit: float, extra: str = "") -> None:
    a, b = min(plain), min(fused)
    print(f"  {label:<22} {a * unit:9.4f} {b * unit:9.4f} {a / b:7.2f}x   (median {statistics.median(plain) * unit:.4f}"
          f" / {statistics.median(fused) * unit:.4f}){extra}", flush=True)


def _per_image(forward, x: torch.Tensor, images: int = 512) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(0, images, len(x)):
            forward(x)
    return (time.perf_counter() - t0) / images


def forwards(plain_model, fused_model, x: torch.Tensor, repeats: int) -> None:
    """Per-image forward time of both models at each batch size, and their largest logit difference."""
    fused_fwd = fusion.forward_of(fused_model, x)
    if fused_fwd is None:
        sys.exit(f"the model could not be fused: {fusion.reason(fused_model)}")
    with torch.no_grad():
        gap = max(float((fused_fwd(x[i : i + 64]) - plain_model(x[i : i + 64])).abs().max()) for i in range(0, len(x), 64))
        scale = float(plain_model(x).abs().max())
    print(f"1. forward passes without gradients, seconds per image (ms): plain | fused | plain/fused; max |logit "
          f"difference| {gap:.2g} on {len(x)} test images (largest |logit| {scale:.3g})")
    for size in SIZES:
        xb = x[:size]
        for f in (plain_model, fused_fwd):  # warm-up: first kernels of this shape, allocator
            _per_image(f, xb, images=2 * size)
        times: dict[str, list[float]] = {"plain": [], "fused": []}
        for _ in range(repeats):
            times["plain"].append(_per_image(plain_model, xb))
            times["fused"].append(_per_image(fused_fwd, xb))
        _row(f"batch {size}", times["plain"], times["fused"], 1e3)


def maps(graders: dict[str, Grader], methods: list[str], images: int, repeats: int) -> None:
    """Each method's maps of the first ``images`` graded images on the biased model, both ways, and their largest
    difference."""
    s = graders["plain"].images.sample_set
    x, y = s.x[:images], s.y[:images]
    level, seed = graders["plain"].profile.method_level, graders["plain"].seed
    print(f"2. maps of {len(x)} graded images on the biased model, seconds: plain | fused | plain/fused")
    for method in methods:
        prior = graders["plain"].store.prior_for(method)

        def run(key: str, method: str = method, prior=prior) -> np.ndarray:
            return explain(method, graders[key].store.models["biased"], x, y, level=level, seed=seed, prior=prior)

        out = {k: run(k) for k in graders}  # warm-up outside the clocks: fusing, chunk sizes, first kernels
        times: dict[str, list[float]] = {"plain": [], "fused": []}
        for _ in range(repeats):
            for k in graders:
                t0 = time.perf_counter()
                run(k)
                times[k].append(time.perf_counter() - t0)
        gap = float(np.abs(out["fused"] - out["plain"]).max())
        scale = float(np.abs(out["plain"]).max())
        _row(method, times["plain"], times["fused"], 1.0, f"  max |map difference| {gap:.2g} (largest |map| {scale:.3g})")


def metrics(graders: dict[str, Grader], names: list[str], method: str, repeats: int) -> None:
    """A perturbation metric's scores of ``method`` on the biased model, both ways, from an empty prediction memo."""
    owner = {m.name: (p, m) for p in PROPERTIES.values() for m in p.metrics}
    print(f"3. metric scores of {method} on the biased model, seconds: plain | fused | plain/fused")
    for name in names:
        if name not in owner:
            sys.exit(f"--metrics: unknown metric {name!r}; choose from {sorted(owner)}")
        prop, metric = owner[name]
        for g in graders.values():
            g.store.attributions(method)  # the maps, once, outside the clocks
        scores: dict[str, np.ndarray] = {}
        times: dict[str, list[float]] = {"plain": [], "fused": []}
        for _ in range(repeats + 1):  # the first round warms up (lazy imports, first kernels) and is not counted
            for k, g in graders.items():
                runner = MetricRunner(g.store, g.images, merge_draws=True)
                t0 = time.perf_counter()
                scores[k] = runner.scores(prop, metric, method)
                times[k].append(time.perf_counter() - t0)
        gap = float(np.nanmax(np.abs(scores["fused"] - scores["plain"])))
        _row(name, times["plain"][1:], times["fused"][1:], 1.0, f"  max |score difference| {gap:.2g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", default=os.environ.get("SHORTCUT_BENCH_CACHE", "."))
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--metrics", default="FaithfulnessCorrelation,RegionPerturbation")
    parser.add_argument("--metric-method", default="Saliency")
    parser.add_argument("--skip-forward", action="store_true")
    parser.add_argument("--skip-maps", action="store_true")
    parser.add_argument("--skip-metrics", action="store_true")
    args = parser.parse_args()
    if args.repeats < 1 or args.threads < 1 or args.images < 2:
        sys.exit("--repeats and --threads must be at least 1, --images at least 2")
    torch.set_num_threads(args.threads)
    discover()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in [*methods, args.metric_method]:
        get_method(m)  # a clear error for an unknown name, before any work
    profile, _ = resolve_profile(args.profile)
    bench = prepare(profile, BenchOptions(cache_root=Path(args.cache_dir)), progress=False)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads, "
          f"torch {torch.__version__}, profile {profile.name}; load {_load()} at the start")
    graders = {"plain": Grader(bench, fused=False), "fused": Grader(bench, fused=True)}
    t0 = time.perf_counter()
    x = torch.as_tensor(bench.world.test_stamped.x[:256].astype(np.float32) / 255.0)
    for model in graders["fused"].store.models.values():
        no_grad_forward(model, x)  # fuses the model and measures its fastest chunk
    print(f"fusing the three models and measuring the fused chunk: {time.perf_counter() - t0:.2f} s once per process; "
          f"{graders['fused'].store.fusion()}")
    if not args.skip_forward:
        forwards(graders["plain"].store.models["biased"], graders["fused"].store.models["biased"], x, args.repeats)
    if not args.skip_maps:
        maps(graders, methods, args.images, args.repeats)
    if not args.skip_metrics:
        metrics(graders, [m.strip() for m in args.metrics.split(",") if m.strip()], args.metric_method, args.repeats)
    print(f"load {_load()} at the end")


if __name__ == "__main__":
    main()
