"""Time one training step of the profile's ViT each way it could run, and where the way the build uses spends it.

Usage: python benchmarks/vit_step.py [--profile quick] [--shape DEPTHxWIDTH] [--threads 1] [--steps 20]
       [--rounds 2] [--ways sdpa,plain,bf16,compile]

Issue 29 asks the quick ViT grid, training included, to take at most 1.5x the CNN's; the ViT's build trains twelve
models of the profile's step budget. This times one optimiser step (forward, loss, backward, AdamW) at the profile's
batch size on ``--threads`` torch threads (1: one process of the parallel build on 2 cores), on random images (a
step's cost does not depend on what the pixels show). ``--shape`` times another depth and token width than the
profile's ViT (e.g. 3x64), with the profile's step budget. The ways:

  sdpa     what the build runs on the CPU: float32, attention as one fused kernel (scaled_dot_product_attention)
  plain    float32, the written-out attention every attribution reads
  bf16     sdpa under the CPU's autocast to bfloat16 (other float sums, so other weights)
  compile  sdpa through torch.compile; its first step (the compile) is printed apart and not in the step time

Rounds alternate the order of the ways, so a change in the machine's load falls on all alike. Printed: each way's
best milliseconds per step and its ratio to sdpa; for sdpa, torch.profiler's split of the step into the linear
layers (mm and addmm, with the GFLOP/s their counted FLOPs reach), the attention kernel (with GFLOP/s on its matmul
FLOPs, forward plus twice that for backward) and everything else, and the step time left if the linear layers or
everything else took no time at all; and the training seconds per model that the step budget implies.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.profiler import profile as torch_profile
from torch.utils.flop_counter import FlopCounterMode

from benchmark.models.arch import VIT_PATCH, build_model, fused_attention
from benchmark.profiles import resolve_profile, with_arch

WAYS = ("sdpa", "plain", "bf16", "compile")
LINEAR_OPS = ("aten::mm", "aten::addmm")


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


class Step:
    """One way's training step on a fresh seeded ViT of ``profile``'s shape, optimiser and batch size."""

    def __init__(self, profile, way: str):
        torch.manual_seed(0)
        self.way, self.profile = way, profile
        self.model = build_model("vit", depth=profile.depth, width=profile.width,
                                 image_size=profile.image_size).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
        gen = torch.Generator().manual_seed(0)
        size = profile.image_size
        self.x = torch.rand(profile.batch_size, 3, size, size, generator=gen)
        self.y = torch.randint(0, 2, (profile.batch_size,), generator=gen)
        self.forward = torch.compile(self.model) if way == "compile" else self.model
        self.loss_fn = nn.CrossEntropyLoss()
        self.compile_s: float | None = None

    def __call__(self) -> None:
        with fused_attention(self.model, self.way != "plain"), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.way == "bf16"):
            loss = self.loss_fn(self.forward(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def warm(self) -> None:
        """Run the first steps untimed (a compile happens in the first)."""
        t0 = time.perf_counter()
        self()
        if self.way == "compile":
            self.compile_s = time.perf_counter() - t0
        for _ in range(2):
            self()

    def time(self, steps: int) -> float:
        """Milliseconds per step over ``steps`` steps."""
        t0 = time.perf_counter()
        for _ in range(steps):
            self()
        return (time.perf_counter() - t0) / steps * 1000


def attention_flops(profile) -> float:
    """The attention's matmul FLOPs in one training step: QK^T and AV forward, twice that backward."""
    tokens = (profile.image_size // VIT_PATCH) ** 2
    forward = 2 * 2 * profile.batch_size * tokens * tokens * profile.width * profile.depth
    return 3.0 * forward


def split(step: Step, steps: int) -> dict[str, float]:
    """Milliseconds per step in the linear layers, the attention kernel and the rest (torch.profiler self times),
    and the linear layers' counted FLOPs per step."""
    with FlopCounterMode(display=False) as counter:
        step()
    counts = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    with torch_profile() as prof:
        for _ in range(steps):
            step()
    ms = {"linear": 0.0, "attention": 0.0, "other": 0.0}
    for event in prof.key_averages():
        part = ("linear" if event.key in LINEAR_OPS else
                "attention" if "scaled_dot_product" in event.key else "other")
        ms[part] += event.self_cpu_time_total / 1000 / steps
    ms["linear_flops"] = float(counts.get("aten.mm", 0) + counts.get("aten.addmm", 0))
    return ms


def report_split(profile, ms: dict[str, float], best: float) -> None:
    """Print the step in use split by kind, and what would be left without each part."""
    total = ms["linear"] + ms["attention"] + ms["other"]
    print(f"sdpa under the profiler: {total:.1f} ms per step (best unprofiled {best:.1f} ms)")
    print(f"  linear layers: {ms['linear']:.1f} ms ({ms['linear'] / total:.0%}), "
          f"{ms['linear_flops'] / 1e9:.2f} GFLOP counted, {ms['linear_flops'] / ms['linear'] / 1e6:.0f} GFLOP/s")
    print(f"  attention kernel: {ms['attention']:.1f} ms ({ms['attention'] / total:.0%}), "
          f"{attention_flops(profile) / 1e9:.2f} GFLOP of matmuls, "
          f"{attention_flops(profile) / max(ms['attention'], 1e-9) / 1e6:.0f} GFLOP/s")
    print(f"  everything else (copies, layer norms, adds, softmax, optimiser): {ms['other']:.1f} ms "
          f"({ms['other'] / total:.0%})")
    for gone in ("linear", "other"):
        left = best * (1 - ms[gone] / total)
        print(f"  if the {'linear layers' if gone == 'linear' else 'rest'} took no time: {left:.1f} ms per step, "
              f"{left * profile.min_steps / 1000:.0f} s per model")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick")
    p.add_argument("--shape", default=None, help="DEPTHxWIDTH of the ViT (default: the profile's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20, help="timed steps per way and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, from {', '.join(WAYS)} (sdpa first)")
    args = p.parse_args(argv)
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    if args.threads < 1 or args.steps < 1 or args.rounds < 1:
        p.error("--threads, --steps and --rounds must be >= 1")
    if not ways or ways[0] != "sdpa" or set(ways) - set(WAYS):
        p.error(f"--ways: comma-separated, starting with sdpa (the build's way), from {', '.join(WAYS)}")
    torch.set_num_threads(args.threads)
    profile = with_arch(resolve_profile(args.profile)[0], "vit")
    if args.shape:
        try:
            depth, width = (int(v) for v in args.shape.lower().split("x"))
        except ValueError:
            p.error(f"--shape {args.shape!r}: give DEPTHxWIDTH, e.g. 3x64")
        profile = dataclasses.replace(profile, depth=depth, width=width)
    print(f"{profile.name} ViT {profile.depth}x{profile.width} at {profile.image_size} px, batch "
          f"{profile.batch_size}, {profile.min_steps} steps per model; {args.threads} thread(s), {os.cpu_count()} "
          f"CPUs, torch {torch.__version__}; load before {load()}")
    steps = {way: Step(profile, way) for way in ways}
    for step in steps.values():
        step.warm()
    best: dict[str, float] = {}
    for r in range(args.rounds):
        for way in (ways if r % 2 == 0 else ways[::-1]):
            ms = steps[way].time(args.steps)
            best[way] = min(best.get(way, ms), ms)
            print(f"round {r + 1}, {way:7s}: {ms:7.1f} ms per step")
    print(f"load after {load()}")
    for way in ways:
        extra = f"; first step {steps[way].compile_s:.1f} s (the compile, or its on-disk cache)" if steps[way].compile_s is not None else ""
        print(f"best {way:7s}: {best[way]:7.1f} ms per step, {best[way] / best['sdpa']:.2f}x sdpa's, "
              f"{best[way] * profile.min_steps / 1000:.0f} s per model{extra}")
    report_split(profile, split(steps["sdpa"], args.steps), best["sdpa"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
