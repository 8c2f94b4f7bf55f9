"""Time training two models one after another on all threads against side by side on a share each; print the ratio.

Usage: python benchmarks/parallel_train.py [--profile quick] [--threads 2] [--arms control,absent] [--rounds 1]

The world is built first (not timed), in a fresh temporary cache. Each round trains the ``--arms`` of seed 0 twice,
each time into a fresh model cache: in this process, one after another, on ``--threads`` torch threads (what
``prepare`` did before benchmark.models.parallel), and through ``benchmark.models.parallel.train_missing`` on a budget
of ``--threads`` (one spawned process per model, each on its share, process start-up included). Rounds alternate
which goes first, so a change in the machine's load falls on both alike. Printed: the load average before and after,
each timing, the ratio of the best of each, and whether the two ways gave the same weights (the thread count enters the float sums).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmark.data import build_world
from benchmark.models.parallel import train_missing
from benchmark.models.train import get_trained_model, model_dir_for
from benchmark.options import BenchOptions
from benchmark.profiles import resolve_profile
from benchmark.running.threads import ENV_VAR


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def sequential(world, profile, arms: list[str], cache: Path, threads: int) -> float:
    """Seconds to train ``arms`` here, one after another, on ``threads`` threads."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    for arm in arms:
        assert not get_trained_model(world, arm, profile, seed=0, cache_dir=cache, device="cpu", progress=False).cache_hit
    return time.perf_counter() - t0


def side_by_side(world, profile, arms: list[str], cache: Path, threads: int) -> float:
    """Seconds to train ``arms`` in spawned processes sharing a budget of ``threads`` threads."""
    os.environ[ENV_VAR] = str(threads)
    t0 = time.perf_counter()
    trained = train_missing(world, profile, [(arm, 0) for arm in arms], cache, "cpu")
    assert trained == {(arm, 0) for arm in arms}, f"the pool trained {trained} (a budget under 2 threads runs none)"
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, default=2, help="the thread budget both ways share (default 2)")
    parser.add_argument("--arms", default="control,absent")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    profile, _ = resolve_profile(args.profile)
    arms = args.arms.split(",")
    print(f"load average before: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = build_world(BenchOptions(cache_root=root).data_spec(profile), root / "datasets")
        ways = {"sequential": sequential, "side by side": side_by_side}
        times: dict[str, list[float]] = {name: [] for name in ways}
        for r in range(args.rounds):
            for name in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
                times[name].append(ways[name](world, profile, arms, root / f"models-{name}-{r}", args.threads))
                print(f"round {r + 1}: {name} {times[name][-1]:.1f} s (load average {load()})", flush=True)
        seq, par = (min(times[name]) for name in ways)
        same = [(model_dir_for(world, arm, profile, 0, root / f"models-{name}-0", "cpu") / "model.pt").read_bytes()
                for arm in arms for name in ways]
    print(f"profile {profile.name}, arms {arms} of seed 0, {args.threads} threads, {args.rounds} round(s)")
    workers = min(len(arms), args.threads)
    print(f"sequential on {args.threads} threads: {seq:.1f} s   side by side, {workers} processes of "
          f"{max(1, args.threads // workers)} thread(s): {par:.1f} s   sequential/side-by-side: {seq / par:.2f}x")
    print(f"same weights both ways: {all(same[i] == same[i + 1] for i in range(0, len(same), 2))}")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
