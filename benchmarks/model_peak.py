"""The grid's model passes against this machine's arithmetic peak: how much faster a forward or a gradient could get.

The grid's floor (`quantus_vs_bench.py`) prices its model passes at the cheapest way and batch size measured; this
script asks how far below that floor the passes themselves could still go. For each architecture (untrained, at the
quick profile's 32 px, channels-last as the grader explains on the CPU) and each way the grid runs it (the fused
no-grad forward of the perturbation methods and metrics, the plain no-grad forward, and the forward with an input
gradient of the gradient methods), at each batch size, it prints milliseconds per image, the FLOPs torch counts per
image (`torch.utils.flop_counter`: convolutions and matrix products, the backward's included; the fused copy at the
plain model's count), the GFLOP/s those give, and their share of one single-precision matrix product's GFLOP/s on the
same threads (`--matmul` square, the machine's practical peak). The product is timed between the ways in every
repetition, so load on a shared machine hits both; each figure is the fastest of `--repeats`.

Usage: python benchmarks/model_peak.py [--threads 1] [--repeats 5] [--sizes 32,64,128,256] [--rows 256]
       [--archs cnn,resnet] [--px 32] [--matmul 2048]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark.models.arch import build_model
from benchmark.models.fused import fuse_module

WAYS = ("plain", "fused", "gradient")  # plain first: the fused way is priced at its count


def _pass(way: str, model, graph):
    """One pass of ``way`` on a batch: its logits, or its input gradient."""
    if way == "gradient":
        # Only the input's gradient, as Captum takes one; backward() rather than autograd.grad, which torch's FLOP
        # counter cannot follow.
        frozen = copy.deepcopy(model).requires_grad_(False)

        def run(x):
            x = x.detach().requires_grad_()
            frozen(x)[:, 0].sum().backward()
            return x.grad
        return run
    forward = graph if way == "fused" else model

    def run(x):
        with torch.no_grad():
            return forward(x)
    return run


def flops_per_image(run, x: torch.Tensor) -> float:
    """FLOPs torch counts in ``run(x)``, per row of ``x``."""
    with FlopCounterMode(display=False) as counter:
        run(x)
    return counter.get_total_flops() / len(x)


def seconds_per_image(run, x: torch.Tensor, size: int) -> float:
    """Seconds per row of ``x`` when ``run`` takes it in passes of ``size`` rows."""
    t0 = time.perf_counter()
    for s in range(0, len(x), size):
        run(x[s : s + size])
    return (time.perf_counter() - t0) / len(x)


def matmul_gflops(n: int) -> float:
    """GFLOP/s of one ``n`` × ``n`` single-precision matrix product on this process's threads."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(n, n, generator=gen), torch.rand(n, n, generator=gen)
    t0 = time.perf_counter()
    a @ b
    return 2 * n**3 / (time.perf_counter() - t0) / 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a -n 2 worker runs one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="32,64,128,256", help="comma-separated rows per pass")
    parser.add_argument("--rows", type=int, default=256, help="rows timed per figure")
    parser.add_argument("--archs", default="cnn,resnet", help="comma-separated: cnn, resnet")
    parser.add_argument("--px", type=int, default=32)
    parser.add_argument("--matmul", type=int, default=2048, help="side of the matrix product that stands for peak")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    torch.set_num_threads(args.threads)
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s), torch {torch.__version__}, load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    x = torch.rand(args.rows, 3, args.px, args.px, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    runs, flops = {}, {}
    for arch in args.archs.split(","):
        torch.manual_seed(1)
        model = build_model(arch, depth=20, image_size=args.px).eval().to(memory_format=torch.channels_last)
        graph = fuse_module(model)
        for way in WAYS:
            runs[arch, way] = run = _pass(way, model, graph)
            # Torch's counter does not see inside a TorchScript graph; the fused copy runs the plain model's
            # convolutions and products (its BatchNorm folded into them), so it is priced at the plain count.
            flops[arch, way] = flops[arch, "plain"] if way == "fused" else flops_per_image(run, x[:2])
            run(x[: sizes[0]])  # warm: the first call of a graph or kernel is not what a grid's passes cost
    matmul = max(matmul_gflops(args.matmul) for _ in range(2))
    best = {key: float("inf") for key in ((*k, s) for k in runs for s in sizes)}
    for _ in range(args.repeats):
        for (arch, way), run in runs.items():
            for s in sizes:
                best[arch, way, s] = min(best[arch, way, s], seconds_per_image(run, x, s))
            matmul = max(matmul, matmul_gflops(args.matmul))
    print(f"  peak: a {args.matmul}x{args.matmul} matrix product, {matmul:.1f} GFLOP/s (fastest of {args.repeats + 2})")
    print(f"  {'model':<7} {'way':<9} {'rows':>5} {'ms/image':>9} {'MFLOP/image':>12} {'GFLOP/s':>8} {'of peak':>8}")
    for (arch, way, s), sec in best.items():
        rate = flops[arch, way] / sec / 1e9
        print(f"  {arch:<7} {way:<9} {s:>5} {sec * 1e3:9.4f} {flops[arch, way] / 1e6:12.2f} {rate:8.1f} "
              f"{rate / matmul:7.0%}")


if __name__ == "__main__":
    main()
