"""ROAD's noisy linear imputation by sparse LU (Quantus' solve), by the banded Cholesky solve image by image, and by
the banded solve with each step's systems built for all its images at once, side by side.

For each of ``--methods`` (cheap maps, so a cell's time is the metric's), ROAD's scores on the biased model are
computed with each way in turn, repetition by repetition from an empty prediction memo; the maps are computed once,
outside the clocks. It prints the ROAD cell's seconds and the seconds spent imputing, each way, their ratios to the
sparse LU, the number of imputation calls (one per step, each for all its images), and the largest score difference
from the sparse LU. Times are the fastest of ``--repeats``; the load average is printed before and after.

Usage: python benchmarks/road_imputation.py [--cache-dir /tmp/qc] [--profile quick] [--threads 1] [--repeats 3]
       [--methods Saliency,GradCAM,Random]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.grading import quantus_adapters
from benchmark.grading.grader import Grader, MetricRunner
from benchmark.grading.properties import PROPERTIES
from benchmark.methods import discover, get_method
from benchmark.options import BenchOptions
from benchmark.profiles import resolve_profile
from benchmark.session import prepare

_BATCHED = quantus_adapters.noisy_linear_imputation_batch  # held: a timed run replaces the module's


def _banded_per_image(arr: np.ndarray, indices: np.ndarray, noise: float = 0.01) -> np.ndarray:
    return np.stack([_BATCHED(a[None], i[None], noise)[0] for a, i in zip(arr, indices)])


SOLVES = {"sparse LU": quantus_adapters.sparse_imputation_per_image, "banded": _banded_per_image, "batched": _BATCHED}


class _Timed:
    """An imputation function that adds its seconds and calls up."""

    def __init__(self, func):
        self.func, self.seconds, self.calls = func, 0.0, 0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.func(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def _load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def _road(grader: Grader, method: str, solve) -> tuple[np.ndarray, float, _Timed]:
    """ROAD's per-sample scores of ``method`` with ``solve`` imputing, the cell's seconds and the imputation timer."""
    prop = PROPERTIES["faithfulness"]
    metric = prop.metric("ROAD")
    timed = _Timed(solve)
    saved = quantus_adapters.noisy_linear_imputation_batch
    quantus_adapters.noisy_linear_imputation_batch = timed
    try:
        runner = MetricRunner(grader.store, grader.images, merge_draws=True)
        t0 = time.perf_counter()
        scores = np.asarray(runner.scores(prop, metric, method), dtype=np.float64)
        return scores, time.perf_counter() - t0, timed
    finally:
        quantus_adapters.noisy_linear_imputation_batch = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", default=os.environ.get("SHORTCUT_BENCH_CACHE", "."))
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="Saliency,GradCAM,Random")
    args = parser.parse_args()
    if args.repeats < 1 or args.threads < 1:
        sys.exit("--repeats and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    discover()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        get_method(m)  # a clear error for an unknown name, before any work
    profile, _ = resolve_profile(args.profile)
    bench = prepare(profile, BenchOptions(cache_root=Path(args.cache_dir)), progress=False)
    print(f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads, profile {profile.name}; "
          f"load {_load()} at the start")
    grader = Grader(bench)
    print("ROAD on the biased model, seconds (fastest of the repeats): cell | imputing (imputation calls), each way")
    totals = {k: [0.0, 0.0] for k in SOLVES}
    for method in methods:
        grader.store.attributions(method)  # the maps, once, outside the clocks
        runs: dict[str, list] = {k: [] for k in SOLVES}
        for _ in range(args.repeats + 1):  # the first round warms up (imports, first kernels) and is not counted
            for name, solve in SOLVES.items():
                runs[name].append(_road(grader, method, solve))
        best = {k: (min(r[1] for r in v[1:]), min(r[2].seconds for r in v[1:]), v[-1][2].calls) for k, v in runs.items()}
        gap = max(float(np.nanmax(np.abs(runs[k][-1][0] - runs["sparse LU"][-1][0]))) for k in SOLVES)
        cell_a, imp_a, _ = best["sparse LU"]
        ways = "   ".join(f"{k} {cell:6.2f} | {imp:6.2f} ({calls} calls)" for k, (cell, imp, calls) in best.items())
        ratios = ", ".join(f"{k}: cell {cell_a / cell:.2f}x, imputing {imp_a / imp:.2f}x"
                           for k, (cell, imp, _) in best.items() if k != "sparse LU")
        print(f"  {method:<12} {ways}; against the sparse LU {ratios}; max |score difference| {gap:.2g}")
        for k, (cell, imp, _) in best.items():
            totals[k][0] += cell
            totals[k][1] += imp
    cell_a, imp_a = totals["sparse LU"]
    print("  all          cell " + ", ".join(f"{k} {cell:.2f} s ({cell_a / cell:.2f}x)" for k, (cell, _) in totals.items())
          + "; imputing " + ", ".join(f"{k} {imp:.2f} s ({imp_a / imp:.2f}x)" for k, (_, imp) in totals.items()))
    print(f"load {_load()} at the end")


if __name__ == "__main__":
    main()
