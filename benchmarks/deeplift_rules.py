"""DeepLIFT's maps with Captum's rules against ``benchmark.methods._deeplift_rules``, side by side, and their bits.

For each DeepLIFT method and model (the quick SmallCNN and a ResNet-8, random weights, channels-last as the grader runs
them on the CPU), the maps of ``--images`` random 32 px images with Captum's own ReLU and max-pool rules and with the
rules that compute each half-batch quantity once, interleaved, the fastest of ``--repeats`` each; printed: both times,
their ratio and whether the maps are identical bit for bit.

Usage: python benchmarks/deeplift_rules.py [--threads 1] [--images 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import time

import numpy as np
import torch

from benchmark.methods import _captum, _deeplift_rules, explain
from benchmark.models.arch import build_model

METHODS = ("DeepLift", "DeepLiftShap", "LayerDeepLift", "LayerDeepLiftShap")


def _timed(rules, name: str, model, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    _captum.rules = rules
    t0 = time.perf_counter()
    maps = explain(name, model, x, y, seed=0)
    return time.perf_counter() - t0, maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s), load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.images, 3, 32, 32, generator=gen).numpy()
    y = torch.randint(0, 2, (args.images,), generator=gen).numpy()
    print(f"  {'model':<8} {'method':<18} {'Captum':>8} {'halves':>8} {'ratio':>7}  maps")
    for arch in ("cnn", "resnet"):
        torch.manual_seed(1)
        model = build_model(arch, depth=8).eval().to(memory_format=torch.channels_last)
        for name in METHODS:
            captum, ours = [], []
            for _ in range(args.repeats):
                t, captum_maps = _timed(contextlib.nullcontext, name, model, x, y)
                captum.append(t)
                t, our_maps = _timed(_deeplift_rules.rules, name, model, x, y)
                ours.append(t)
            same = "identical" if captum_maps.tobytes() == our_maps.tobytes() else "DIFFER"
            print(f"  {arch:<8} {name:<18} {min(captum):7.3f}s {min(ours):7.3f}s {min(captum) / min(ours):6.2f}x  {same}")
    _captum.rules = _deeplift_rules.rules


if __name__ == "__main__":
    main()
