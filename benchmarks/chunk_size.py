"""Gradient methods' maps at each chunk size (images per ``explain`` chunk), side by side: per-image time, and whether
the maps keep their bits.

A method that draws nothing (Saliency, the CAMs, the LRP rules) gives every image the same map in any chunk, so its
``batch_size`` is only a speed setting: each forward-backward pass holds one chunk. For each method named and each model
(the quick SmallCNN and a ResNet-20, random weights, channels-last as the grader runs them on the CPU), the maps of
``--images`` random ``--px`` images at each size in ``--sizes``, interleaved, the fastest of ``--repeats`` each; printed:
milliseconds per image, the speed-up over the first size, and "same" where every map has the first size's bits, else
"moved" (a method that draws per chunk: its size is not a speed setting), with the method's declared size marked *.

Usage: python benchmarks/chunk_size.py [--methods A,B] [--threads 1] [--images 128] [--repeats 4] [--sizes 64,32,16,8]
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

DEFAULT = ("Saliency,InputXGradient,GuidedBackprop,Deconvolution,GradCAM,GradCAMInner,GuidedGradCAM,"
           "LayerGradientXActivation,LRPEpsilon,DeepLift,LayerDeepLift,ZennitEpsilonPlusFlat,ZennitEpsilonGammaBox,"
           "ZennitEpsilonAlpha2Beta1")


def _row(name: str, model, x: np.ndarray, y: np.ndarray, sizes: list[int], repeats: int) -> str:
    seconds: dict[int, list[float]] = {s: [] for s in sizes}
    maps: dict[int, np.ndarray] = {}
    for _ in range(repeats):
        for s in sizes:
            t0 = time.perf_counter()
            maps[s] = explain(name, model, x, y, seed=0, batch_size=s)
            seconds[s].append(time.perf_counter() - t0)
    ms = {s: min(seconds[s]) / len(x) * 1e3 for s in sizes}
    declared = all_methods()[name].batch_size
    return " ".join(f"{'*' if s == declared else ' '}{ms[s]:6.2f} {ms[sizes[0]] / ms[s]:4.2f}x "
                    f"{'same' if maps[s].tobytes() == maps[sizes[0]].tobytes() else 'moved':<5}" for s in sizes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=DEFAULT, help="comma-separated registered methods")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--sizes", default="64,32,16,8", help="comma-separated images per chunk")
    parser.add_argument("--archs", default="cnn,resnet", help="comma-separated: cnn, resnet")
    parser.add_argument("--px", type=int, default=32, help="image size (the quick profile's 32; standard's 64)")
    args = parser.parse_args(argv)
    names = args.methods.split(",")
    unknown = [n for n in names if n not in all_methods()]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(sorted(all_methods()))}")
    sizes = [int(s) for s in args.sizes.split(",")]
    torch.set_num_threads(args.threads)
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s), load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.images, 3, args.px, args.px, generator=gen).numpy()
    y = torch.randint(0, 2, (args.images,), generator=gen).numpy()
    print(f"  {'model':<7} {'method':<25} " + " ".join(f"{s:>19}" for s in sizes)
          + f"   (ms per image, speed-up over {sizes[0]}, same bits as {sizes[0]}; * the declared size)")
    for arch in args.archs.split(","):
        torch.manual_seed(1)
        model = build_model(arch, depth=20, image_size=args.px).eval().to(memory_format=torch.channels_last)
        for name in names:
            print(f"  {arch:<7} {name:<25} " + _row(name, model, x, y, sizes, args.repeats), flush=True)


if __name__ == "__main__":
    main()
