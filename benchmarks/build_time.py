"""Time building the world (data + both models) on a cold and then a warm cache; print the ratio.

Usage: python benchmarks/build_time.py [--profile quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmark.options import BenchOptions
from benchmark.profiles import resolve_profile
from benchmark.session import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    profile, reason = resolve_profile(args.profile)
    with tempfile.TemporaryDirectory() as tmp:
        options = BenchOptions(cache_root=Path(tmp))
        t0 = time.perf_counter()
        cold = prepare(profile, options, progress=False)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = prepare(profile, options, progress=False)
        t_warm = time.perf_counter() - t0
    assert warm.biased.cache_hit and warm.control.cache_hit and warm.world.cache_hit
    print(f"profile {profile.name} ({reason}), {torch.get_num_threads()} torch threads, device {cold.device}")
    print(cold.world.summary())
    for m in (cold.biased, cold.control):
        print(m.header_line())
    print(f"cold build: {t_cold:.1f} s   warm load: {t_warm:.2f} s   cold/warm ratio: {t_cold / t_warm:.0f}x")


if __name__ == "__main__":
    main()
