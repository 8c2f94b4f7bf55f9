"""Train the ViT's biased and control models at several optimiser-step budgets and training seeds; print each card.

Usage: python benchmarks/vit_budget.py [--profile quick] [--steps 376,423,470] [--seeds 0,1,2,3] [--cache-dir DIR]
       [--shape DEPTHxWIDTH]

Issue 29 asks for the smallest step budget at which the ViT meets the shortcut targets (flips >= 80% of stamped cats
at mean p(dog) >= 0.9; its control model flips <= 10%). Each budget trains through the code every build runs
(``benchmark.models.parallel.train_missing``, one single-thread process per model on the cores available), into one
cache (``--cache-dir``, kept, so a budget's models are reused by a later build at that budget). Printed: one row per
budget and seed with the biased model's clean accuracy, flip rate and mean p(dog) on flips, the control model's flip
rate, whether the targets are met, and the training seconds; then, per budget, whether every seed met them.
Budgets are rounded up to whole epochs, as the profile's ``min_steps`` is. ``--shape`` trains another depth and
token width than the profile's ViT (e.g. 3x64).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from benchmark.data import build_world
from benchmark.models.card import unlearned
from benchmark.models.parallel import train_missing
from benchmark.models.train import get_trained_model
from benchmark.options import BenchOptions
from benchmark.profiles import resolve_profile, with_arch

CONTROL_FLIPS = 0.10  # issue 29's target for the control model


def ints(text: str) -> list[int]:
    """'1,2,3' -> [1, 2, 3]."""
    return [int(v) for v in text.split(",") if v.strip()]


def shape(text: str) -> tuple[int, int]:
    """'3x64' -> (3, 64)."""
    try:
        depth, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give DEPTHxWIDTH, e.g. 3x64") from None
    return depth, width


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick")
    p.add_argument("--steps", type=ints, default=[376, 423, 470])
    p.add_argument("--seeds", type=ints, default=[0, 1, 2, 3])
    p.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: a temporary folder)")
    p.add_argument("--shape", type=shape, default=None, help="DEPTHxWIDTH of the ViT (default: the profile's)")
    args = p.parse_args(argv)
    if not args.steps or min(args.steps) < 1 or not args.seeds or min(args.seeds) < 0:
        p.error("--steps needs budgets >= 1 and --seeds seeds >= 0")
    base = with_arch(resolve_profile(args.profile)[0], "vit")
    if args.shape:
        base = dataclasses.replace(base, depth=args.shape[0], width=args.shape[1])
    with tempfile.TemporaryDirectory(prefix="vit-budget-") as tmp:
        cache = args.cache_dir or Path(tmp)
        world = build_world(BenchOptions().data_spec(base), cache_dir=cache)
        print("| steps | seed | biased: clean acc / flip rate / mean p(dog) on flips | control: flip rate | targets | "
              "train s (biased, control) |")
        print("|---|---|---|---|---|---|")
        verdicts = {}
        for steps in args.steps:
            profile = dataclasses.replace(base, min_steps=steps)
            jobs = [(arm, seed) for seed in args.seeds for arm in ("biased", "control")]
            t0 = time.perf_counter()
            train_missing(world, profile, jobs, cache, "cpu")  # side by side; with one process, the loop trains
            met_all = True
            for seed in args.seeds:
                b, c = (get_trained_model(world, arm, profile, seed=seed, cache_dir=cache, device="cpu",
                                          progress=False).card for arm in ("biased", "control"))
                missed = unlearned(b) + ([f"control flips {c['flip_rate']:.3f} > {CONTROL_FLIPS}"]
                                         if c["flip_rate"] > CONTROL_FLIPS else [])
                met_all &= not missed
                print(f"| {b['optimiser_steps']} | {seed} | {b['clean_accuracy']:.3f} / {b['flip_rate']:.3f} / "
                      f"{b['mean_p_dog_on_flips']:.3f} | {c['flip_rate']:.3f} | "
                      f"{'met' if not missed else 'MISSED: ' + '; '.join(missed)} | "
                      f"{b['train_seconds']:.0f}, {c['train_seconds']:.0f} |", flush=True)
            verdicts[steps] = (met_all, time.perf_counter() - t0)
        print()
        for steps, (met_all, wall) in verdicts.items():
            print(f"- {steps} steps: targets {'met on every seed' if met_all else 'MISSED on some seed'} "
                  f"({wall:.0f} s to train and load {2 * len(args.seeds)} models)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
