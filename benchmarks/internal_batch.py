"""The path methods' maps at each ``internal_batch_size``, side by side: per-image time and how far the maps move.

Captum's path methods (IntegratedGradients and the layer methods that integrate along the input path) forward and
back-propagate ``internal_batch_size`` rows per pass (images × steps). For each such method and model (the quick
SmallCNN and a ResNet-20, random weights, channels-last as the grader runs them on the CPU), the maps of ``--images``
random ``--px`` images at every size in ``--sizes``, interleaved, the fastest of ``--repeats`` each; printed: milliseconds
per image, the ratio to the first size, and the largest absolute difference of the maps from the first size's (the
steps' partial sums are added in another grouping, so the maps move by float rounding).

Usage: python benchmarks/internal_batch.py [--threads 1] [--images 64] [--repeats 3] [--sizes 128,64,32,16]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time

import numpy as np
import torch

from benchmark.methods import all_methods, explain
from benchmark.models.arch import build_model


def path_methods() -> list[str]:
    """The registered methods whose cheap parameters include an ``internal_batch_size``."""
    return [cls.name for cls in all_methods().values() if "internal_batch_size" in cls.params.get("cheap", {})]


def _timed(name: str, model, x: np.ndarray, y: np.ndarray, size: int) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    maps = explain(name, model, x, y, seed=0, params={"internal_batch_size": size})
    return time.perf_counter() - t0, maps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="128,64,32,16", help="comma-separated; the first is the reference")
    parser.add_argument("--methods", default=None, help="comma-separated (default: every path method)")
    parser.add_argument("--archs", default="cnn,resnet", help="comma-separated: cnn, resnet")
    parser.add_argument("--px", type=int, default=32, help="image size (the quick profile's 32; standard's 64)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    torch.set_num_threads(args.threads)
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s), load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.images, 3, args.px, args.px, generator=gen).numpy()
    y = torch.randint(0, 2, (args.images,), generator=gen).numpy()
    names = args.methods.split(",") if args.methods else path_methods()
    print(f"  {'model':<7} {'method':<25} " + " ".join(f"{f'{s} rows':>17}" for s in sizes)
          + f"   (ms per image, ratio to {sizes[0]} rows; max |map difference|)")
    for arch in args.archs.split(","):
        torch.manual_seed(1)
        model = build_model(arch, depth=20, image_size=args.px).eval().to(memory_format=torch.channels_last)
        for name in names:
            seconds: dict[int, list[float]] = {s: [] for s in sizes}
            maps: dict[int, np.ndarray] = {}
            for _ in range(args.repeats):
                for s in sizes:
                    t, maps[s] = _timed(name, model, x, y, s)
                    seconds[s].append(t)
            ms = {s: min(seconds[s]) / args.images * 1e3 for s in sizes}
            cols = [f"{ms[s]:6.2f} {ms[sizes[0]] / ms[s]:4.2f}x {np.abs(maps[s] - maps[sizes[0]]).max():.0e}"
                    for s in sizes]
            print(f"  {arch:<7} {name:<25} " + " ".join(f"{c:>17}" for c in cols))


if __name__ == "__main__":
    main()
