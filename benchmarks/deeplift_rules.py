"""DeepLIFT's maps with Captum's rules against ``benchmark.methods._deeplift_rules``, side by side, and their bits.

For each DeepLIFT method and model (the quick SmallCNN and a ResNet-8, random weights, channels-last as the grader runs
them on the CPU), the maps of ``--images`` random 32 px images three ways, interleaved, the fastest of ``--repeats``
each: with Captum's own ReLU and max-pool rules and hooks; with the rules that compute each half-batch quantity once
(Captum's hooks, which copy each module's input and output); and with those rules and hooks that keep the inputs and
outputs without copies (the grader's way). Printed: the three times, the ratios to Captum's, and whether the maps are
identical bit for bit.

Usage: python benchmarks/deeplift_rules.py [--threads 1] [--images 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import os
import platform
import time

import numpy as np
import torch

from benchmark.methods import _deeplift_rules, explain
from benchmark.models.arch import build_model

METHODS = ("DeepLift", "DeepLiftShap", "LayerDeepLift", "LayerDeepLiftShap")


OURS = _deeplift_rules.rules
WAYS = {
    "Captum": lambda algo=None, copies=False: contextlib.nullcontext(),  # Captum's table and hooks untouched
    "halves": functools.partial(OURS, copies=True),
    "no copies": OURS,
}


def _timed(way: str, name: str, model, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    _deeplift_rules.rules = WAYS[way]
    try:
        t0 = time.perf_counter()
        maps = explain(name, model, x, y, seed=0)
        return time.perf_counter() - t0, maps
    finally:
        _deeplift_rules.rules = OURS


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
    print(f"  {'model':<8} {'method':<18} " + " ".join(f"{w:>10}" for w in WAYS) + "  ratios to Captum's  maps")
    for arch in ("cnn", "resnet"):
        torch.manual_seed(1)
        model = build_model(arch, depth=8).eval().to(memory_format=torch.channels_last)
        for name in METHODS:
            seconds: dict[str, list[float]] = {w: [] for w in WAYS}
            maps: dict[str, np.ndarray] = {}
            for _ in range(args.repeats):
                for way in WAYS:
                    t, maps[way] = _timed(way, name, model, x, y)
                    seconds[way].append(t)
            best = {w: min(v) for w, v in seconds.items()}
            same = all(m.tobytes() == maps["Captum"].tobytes() for m in maps.values())
            print(f"  {arch:<8} {name:<18} " + " ".join(f"{best[w]:9.3f}s" for w in WAYS) + "  "
                  + " ".join(f"{best['Captum'] / best[w]:5.2f}x" for w in list(WAYS)[1:])
                  + f"  {'identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
