"""Grading cost of K training seeds against one, side by side on the same code and machine (issue 31's 1.2x target).

Usage: python benchmarks/seed_cost.py (--cache-dir DIR | --cold) [--seeds 1,4] [--methods A,B] [--workers 2]
       [--rounds 1]

With --cache-dir every seed's models are built there first (`python -m benchmark build`, not timed). With --cold each
seed count builds its data and models in a fresh temporary cache, timed, before its grid: the cold first run. Then,
for each round, the grid (`pytest suites/ --bench-fresh`) runs once per seed count, in turn, so the machine's load
falls on both alike. Each seed count's profile shares its image budget among the seeds (Profile.per_seed). Printed:
each run's wall time (and build time), the summed cell time per property, and every count's ratio to the first.
Exit status 1 when a run writes no record, 2 on bad input.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def grid(cache: Path, seeds: int, methods: str | None, workers: int, reports: Path,
         arch: str | None = None) -> tuple[float, dict]:
    """Run the grid once on ``seeds`` training seeds (of ``arch``, default the profile's); return (wall seconds, run
    record)."""
    cmd = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", "-n", str(workers),
           "--bench-profile", "quick", "--bench-cache-dir", str(cache), "--bench-reports-dir", str(reports),
           "--bench-model-seeds", str(seeds), "--bench-fresh", *(["--bench-methods", methods] if methods else []),
           *(["--bench-arch", arch] if arch else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if not (reports / "run.json").exists():
        sys.exit(f"the grid on {seeds} seed(s) wrote no run record (exit {proc.returncode}):\n"
                 f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return wall, json.loads((reports / "run.json").read_text())


def build(cache: Path, seeds: int, arch: str | None = None) -> float:
    """Build the data and every seed's models (of ``arch``, default the profile's) in ``cache``; return the wall
    seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmark", "build", "--profile", "quick", "--cache-dir", str(cache),
                    "--model-seeds", str(seeds), *(["--arch", arch] if arch else [])],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def cell_seconds(record: dict) -> dict[str, float]:
    """Summed cell time per property."""
    out: dict[str, float] = collections.Counter()
    for c in record["cells"]:
        out[c["suite"]] += c["seconds"]
    return dict(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--cache-dir", type=Path)
    where.add_argument("--cold", action="store_true", help="a fresh cache per seed count, its build timed")
    parser.add_argument("--seeds", default="1,3")
    parser.add_argument("--methods", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    try:
        counts = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        print(f"seed_cost: --seeds must be whole numbers separated by commas, e.g. 1,3; got {args.seeds!r}",
              file=sys.stderr)
        return 2
    walls: dict[int, list[float]] = collections.defaultdict(list)
    cells: dict[int, list[dict]] = collections.defaultdict(list)
    builds: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        caches = {k: Path(tmp) / f"cache-k{k}" if args.cold else args.cache_dir for k in counts}
        for k in counts:
            if not args.cold:
                build(caches[k], k)  # not timed: the grid alone is compared
        for r in range(args.rounds):
            for k in counts:
                if args.cold and r == 0:
                    builds[k] = build(caches[k], k)
                    print(f"{k} seed(s): data and {3 * k} models built in {builds[k]:.0f} s", flush=True)
                wall, record = grid(caches[k], k, args.methods, args.workers, Path(tmp) / f"r{r}-k{k}")
                walls[k].append(wall)
                cells[k].append(cell_seconds(record))
                print(f"round {r + 1}, {k} seed(s): {wall:.0f} s wall, {len(record['cells'])} cells, "
                      f"{sum(cells[k][-1].values()):.0f} s of cell time", flush=True)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    first = counts[0]
    print(f"\n| seeds | wall (mean of {args.rounds}) | of {first} seed(s) | cell time | of {first} seed(s) |")
    print("|---|---|---|---|---|")
    base_wall = sum(walls[first]) / args.rounds
    base_cell = sum(sum(c.values()) for c in cells[first]) / args.rounds
    for k in counts:
        wall = sum(walls[k]) / args.rounds
        cell = sum(sum(c.values()) for c in cells[k]) / args.rounds
        print(f"| {k} | {wall:.0f} s | {wall / base_wall:.2f} | {cell:.0f} s | {cell / base_cell:.2f} |")
    if builds:
        print(f"\n| seeds | cold first run (build + grid, round 1) | of {first} seed(s) |\n|---|---|---|")
        for k in counts:
            cold = builds[k] + walls[k][0]
            print(f"| {k} | {cold:.0f} s | {cold / (builds[first] + walls[first][0]):.2f} |")
    print(f"\nload average at the end: {' / '.join(load)}")
    for suite in sorted(cells[first][0]):
        parts = [f"{k} seed(s) {sum(c.get(suite, 0) for c in cells[k]) / args.rounds:.0f} s" for k in counts]
        print(f"  {suite:24s} " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
