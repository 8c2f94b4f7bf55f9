"""ROAD's noisy linear imputation by sparse LU (Quantus' solve) against the banded Cholesky solve, side by side.

For each of ``--methods`` (cheap maps, so a cell's time is the metric's), ROAD's scores on the biased model are
computed with each solve in turn, repetition by repetition from an empty prediction memo; the maps are computed once,
outside the clocks. It prints the ROAD cell's seconds and the seconds spent imputing, each way, their ratios, the
number of imputations, and the largest score difference between the two ways. Times are the fastest of
``--repeats``; the load average is printed before and after.

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

SOLVES = {"sparse LU": quantus_adapters.sparse_imputation, "banded": quantus_adapters.noisy_linear_imputation}


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
    saved = quantus_adapters.noisy_linear_imputation
    quantus_adapters.noisy_linear_imputation = timed
    try:
        runner = MetricRunner(grader.store, grader.images, merge_draws=True)
        t0 = time.perf_counter()
        scores = np.asarray(runner.scores(prop, metric, method), dtype=np.float64)
        return scores, time.perf_counter() - t0, timed
    finally:
        quantus_adapters.noisy_linear_imputation = saved


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
    print("ROAD on the biased model, seconds (fastest of the repeats): cell | imputing | imputations, each way")
    totals = {k: [0.0, 0.0] for k in SOLVES}
    for method in methods:
        grader.store.attributions(method)  # the maps, once, outside the clocks
        runs: dict[str, list] = {k: [] for k in SOLVES}
        for _ in range(args.repeats + 1):  # the first round warms up (imports, first kernels) and is not counted
            for name, solve in SOLVES.items():
                runs[name].append(_road(grader, method, solve))
        best = {k: (min(r[1] for r in v[1:]), min(r[2].seconds for r in v[1:]), v[-1][2].calls) for k, v in runs.items()}
        gap = float(np.nanmax(np.abs(runs["banded"][-1][0] - runs["sparse LU"][-1][0])))
        (cell_a, imp_a, n), (cell_b, imp_b, _) = best["sparse LU"], best["banded"]
        print(f"  {method:<12} sparse LU {cell_a:6.2f} | {imp_a:6.2f}   banded {cell_b:6.2f} | {imp_b:6.2f}   "
              f"{n} imputations; cell {cell_a / cell_b:.2f}x, imputing {imp_a / imp_b:.2f}x; "
              f"max |score difference| {gap:.2g}")
        for k, (cell, imp, _) in best.items():
            totals[k][0] += cell
            totals[k][1] += imp
    (cell_a, imp_a), (cell_b, imp_b) = totals["sparse LU"], totals["banded"]
    print(f"  all          cell {cell_a:.2f} s -> {cell_b:.2f} s ({cell_a / cell_b:.2f}x), imputing {imp_a:.2f} s -> "
          f"{imp_b:.2f} s ({imp_a / imp_b:.2f}x)")
    print(f"load {_load()} at the end")


if __name__ == "__main__":
    main()
