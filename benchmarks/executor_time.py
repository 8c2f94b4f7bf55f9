"""Time the grid three ways on one warm cache: in one process, with pytest-xdist (-n), and on a local Ray.

Usage: python benchmarks/executor_time.py [--profile quick] [--workers 2] [--methods A,B] [--cache-dir DIR]
       [--ways in-process,xdist,ray]

Each way is a fresh `pytest suites/` subprocess (the method contract included) on the same cache, which is warmed
first by `python -m benchmark build` (not timed). Printed: wall time of each way, its ratio to the in-process run,
and whether the three leaderboards (md, csv, json) are byte-identical. On a 2-core machine Ray is not expected to
win; the difference to -n is its overhead (starting the cluster, actors importing torch and Quantus, the world
through the object store).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOARDS = ("leaderboard.md", "leaderboard.csv", "leaderboard.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--workers", type=int, default=2, help="xdist workers (-n); Ray uses the machine's CPUs")
    parser.add_argument("--methods", default=None, help="comma-separated subset (default: every method)")
    parser.add_argument("--cache-dir", default=None, help="models/data cache (default: a fresh temporary folder)")
    parser.add_argument("--ways", default="in-process,xdist,ray")
    args = parser.parse_args()
    ways = args.ways.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir) if args.cache_dir else Path(tmp) / "cache"
        subprocess.run([sys.executable, "-m", "benchmark", "build", "--profile", args.profile, "--cache-dir",
                        str(cache)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        walls, boards = {}, {}
        for way in ways:
            out = Path(tmp) / way
            cmd = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", "--bench-profile",
                   args.profile, "--bench-cache-dir", str(cache), "--bench-reports-dir", str(out)]
            if args.methods:
                cmd += ["--bench-methods", args.methods]
            cmd += {"xdist": ["-n", str(args.workers)], "ray": ["--bench-executor", "ray"]}.get(way, [])
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            walls[way] = time.perf_counter() - t0
            if not (out / "leaderboard.md").exists():
                sys.exit(f"{way}: no leaderboard (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
            boards[way] = [(out / name).read_bytes() for name in BOARDS]
    load = os.getloadavg()
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; profile {args.profile}; methods: {args.methods or 'all'}")
    base = walls.get("in-process")
    for way in ways:
        ratio = f"  ({walls[way] / base:.2f} of in-process)" if base else ""
        print(f"  {way:11s} wall {walls[way]:7.1f} s{ratio}")
    same = all(boards[w] == boards[ways[0]] for w in ways)
    print(f"leaderboards {'byte-identical' if same else 'DIFFER'} across {', '.join(ways)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
