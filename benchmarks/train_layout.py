"""Time training one model the default way against its faster path; print the ratio and what each model's card says.

The faster path is channels-last (NHWC) convolutions for the CNNs and ResNets, and attention as one fused kernel
(scaled_dot_product_attention) for the ViT (``--arch vit``).

Usage: python benchmarks/train_layout.py [--profile quick] [--arch vit] [--arm biased] [--threads 1] [--rounds 2]

The world is built first (not timed), in a fresh temporary cache. Each round trains the profile's ``--arm`` model of
seed 0 both ways, each into a fresh model cache, through ``benchmark.models.train.get_trained_model`` (the code
every build runs), on ``--threads`` torch threads (1: what each process of the parallel build gets on 2 cores).
Rounds alternate which way goes first, so a change in the machine's load falls on both alike. Printed: the load
average before and after, each training time, the ratio of the best of each, and both cards' clean accuracy, flip rate
and mean p(dog) on flips, since the two ways sum in other orders and give other weights.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from benchmark.data import build_world
from benchmark.models import train
from benchmark.options import BenchOptions
from benchmark.profiles import resolve_profile, with_arch

# The architectures' faster training path: the list in benchmark.models.train that switches it on.
SWITCHES = {"cnn": ("CHANNELS_LAST_ARCHS", "channels-last", "NCHW"),
            "resnet": ("CHANNELS_LAST_ARCHS", "channels-last", "NCHW"),
            "vit": ("SDPA_ARCHS", "fused attention", "plain attention")}


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def train_once(world, profile, arm: str, cache: Path, fast: bool) -> dict:
    """Train the ``arm`` model into an empty ``cache`` the fast way or the default way; its card."""
    switch = SWITCHES[profile.arch][0]
    archs = getattr(train, switch)
    setattr(train, switch, (profile.arch,) if fast else ())
    try:
        trained = train.get_trained_model(world, arm, profile, seed=0, cache_dir=cache, device="cpu", progress=False)
    finally:
        setattr(train, switch, archs)
    assert not trained.cache_hit, "the model cache was not empty"
    return trained.card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick")
    p.add_argument("--arch", default=None, choices=("vit",), help="train the profile's ViT (default: its own arch)")
    p.add_argument("--arm", default="biased", choices=train.SPLITS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        p.error("--threads and --rounds must be >= 1")
    torch.set_num_threads(args.threads)
    profile = with_arch(resolve_profile(args.profile)[0], args.arch)
    _, fast_name, slow_name = SWITCHES[profile.arch]
    width = max(len(fast_name), len(slow_name))
    with tempfile.TemporaryDirectory(prefix="train-layout-") as tmp:
        root = Path(tmp)
        world = build_world(BenchOptions(cache_root=root).data_spec(profile), root / "datasets")
        print(f"{profile.name}: {profile.arch} on {args.threads} thread(s), {os.cpu_count()} CPUs, "
              f"torch {torch.__version__}; load before {load()}")
        cards: dict[bool, list[dict]] = {False: [], True: []}
        for r in range(args.rounds):
            for fast in ((False, True) if r % 2 == 0 else (True, False)):
                card = train_once(world, profile, args.arm, Path(tmp) / f"models-{r}-{int(fast)}", fast)
                cards[fast].append(card)
                print(f"round {r + 1}, {(fast_name if fast else slow_name).ljust(width)}: "
                      f"{card['train_seconds']:.1f} s, {card['optimiser_steps']} steps, clean acc "
                      f"{card['clean_accuracy']:.3f}, flip rate {card['flip_rate']:.3f}, mean p(dog) on flips "
                      f"{card['mean_p_dog_on_flips']:.3f}, weights {card['weights_sha256'][:12]}")
        best = {k: min(c["train_seconds"] for c in v) for k, v in cards.items()}
        same = {c["weights_sha256"] for c in cards[True]} == {c["weights_sha256"] for c in cards[False]}
        print(f"load after {load()}")
        print(f"best {slow_name} {best[False]:.1f} s, best {fast_name} {best[True]:.1f} s: "
              f"{slow_name} / {fast_name} = {best[False] / best[True]:.2f}; weights "
              f"{'identical' if same else 'differ (other float sums)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
