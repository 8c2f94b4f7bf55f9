"""Gradient methods' maps at each pass size, side by side: per-image time, and whether the maps keep their bits.

A gradient method's forward-backward passes hold its chunk's images times its samples or steps (IntegratedGradients 16
images x 16 steps, SmoothGrad 16 x 8 noise samples, DeepLiftShap 16 images x 4 baselines x 2). Three knobs size them:
``pass_rows`` (rows per gradient pass, the method's draws unchanged), ``pass_images`` (images per Captum call),
``layer_pass_rows`` (LayerGradientShap: rows per layer-gradient pass, and each distinct row's layer outputs computed
once; benchmark.methods._layer_rows) and, for
Captum's layer path methods, ``internal_batch_size`` (which regroups the steps' partial sums, so maps move by float
rounding). For each method that has one and each model (the quick SmallCNN and a ResNet-20, random weights,
channels-last as the grader runs them on the CPU), the maps of ``--images`` random ``--px`` images with the knob off
(one pass per Captum call) and at each size in ``--sizes``, interleaved, the fastest of ``--repeats`` each;
printed: milliseconds per image, the speed-up over the knob off, and "same" where every map has the knob-off bits, else
the largest absolute difference. (IntegratedGradients with its knob off still passes Captum's ``internal_batch_size``.)

Usage: python benchmarks/pass_size.py [--threads 1] [--images 64] [--repeats 3] [--sizes 64,32,16] [--px 32]
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

from benchmark.methods import all_methods, explain
from benchmark.models.arch import build_model

ONE_PASS = 10**6  # a size no chunk reaches: the knob off
_UNSET = object()


def knob(cls) -> str | None:
    """The attribute or parameter that sizes ``cls``'s passes, or None."""
    for attr in ("pass_rows", "pass_images", "layer_pass_rows"):
        if getattr(cls, attr, None) is not None:
            return attr
    return "internal_batch_size" if "internal_batch_size" in cls.params.get("cheap", {}) else None


def sized_methods() -> dict[str, str]:
    """Each registered method whose passes a knob sizes -> that knob."""
    return {name: k for name, cls in all_methods().items() if (k := knob(cls)) is not None}


@contextlib.contextmanager
def _sized(cls, what: str, size: int):
    """``cls``'s passes at ``size`` (``ONE_PASS``: the knob off) inside; its own declaration restored after."""
    own = vars(cls).get(what, _UNSET)
    setattr(cls, what, None if size == ONE_PASS else size)
    try:
        yield
    finally:
        if own is _UNSET:
            delattr(cls, what)  # back to what it inherits
        else:
            setattr(cls, what, own)


def _timed(cls, name: str, what: str, model, x: np.ndarray, y: np.ndarray, size: int) -> tuple[float, np.ndarray]:
    if what == "internal_batch_size":
        sized, params = contextlib.nullcontext(), {what: size}
    else:
        sized, params = _sized(cls, what, size), {}
    with sized:
        t0 = time.perf_counter()
        maps = explain(name, model, x, y, seed=0, params=params)
        return time.perf_counter() - t0, maps


def _row(cls, name: str, what: str, model, x, y, sizes: list[int], repeats: int) -> str:
    seconds: dict[int, list[float]] = {s: [] for s in sizes}
    maps: dict[int, np.ndarray] = {}
    for _ in range(repeats):
        for s in sizes:
            t, maps[s] = _timed(cls, name, what, model, x, y, s)
            seconds[s].append(t)
    ms = {s: min(seconds[s]) / len(x) * 1e3 for s in sizes}
    cols = []
    for s in sizes:
        same = maps[s].tobytes() == maps[ONE_PASS].tobytes()
        moved = "same" if same else f"{np.abs(maps[s] - maps[ONE_PASS]).max():.0e}"
        cols.append(f"{ms[s]:6.2f} {ms[ONE_PASS] / ms[s]:4.2f}x {moved}")
    return " ".join(f"{c:>18}" for c in cols)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="64,32,16", help="comma-separated rows per pass (or internal batch sizes)")
    parser.add_argument("--image-sizes", default="8,4,2", help="comma-separated images per call, for pass_images")
    parser.add_argument("--methods", default=None, help="comma-separated (default: every method a knob sizes)")
    parser.add_argument("--archs", default="cnn,resnet", help="comma-separated: cnn, resnet")
    parser.add_argument("--px", type=int, default=32, help="image size (the quick profile's 32; standard's 64)")
    args = parser.parse_args(argv)
    methods = all_methods()
    knobs = sized_methods()
    names = args.methods.split(",") if args.methods else list(knobs)
    unknown = [n for n in names if n not in methods]
    unsized = [n for n in names if n in methods and n not in knobs]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; methods with a pass size: {', '.join(sorted(knobs))}")
    if unsized:  # a method without a knob would read "same" at every size: nothing would be measured
        parser.error(f"no pass size to vary for {', '.join(unsized)}; methods with one: {', '.join(sorted(knobs))}")
    sizes = [ONE_PASS] + [int(s) for s in args.sizes.split(",")]
    image_sizes = [ONE_PASS] + [int(s) for s in args.image_sizes.split(",")]
    torch.set_num_threads(args.threads)
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s), load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.images, 3, args.px, args.px, generator=gen).numpy()
    y = torch.randint(0, 2, (args.images,), generator=gen).numpy()
    print(f"  {'model':<7} {'method':<25} {'knob':<20} " + " ".join(f"{'knob off' if s == ONE_PASS else s:>18}"
                                                                  for s in sizes)
          + f"   (ms per image, speed-up with the knob off; same bits or max |difference|; pass_images: {image_sizes[1:]})")
    for arch in args.archs.split(","):
        torch.manual_seed(1)
        model = build_model(arch, depth=20, image_size=args.px).eval().to(memory_format=torch.channels_last)
        for name in names:
            what = knobs[name]
            tried = image_sizes if what == "pass_images" else sizes
            print(f"  {arch:<7} {name:<25} {what:<20} " + _row(methods[name], name, what, model, x, y, tried,
                                                               args.repeats), flush=True)


if __name__ == "__main__":
    main()
