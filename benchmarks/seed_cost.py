"""Grading cost of K training seeds against one, side by side on the same code and machine (issue 31's 1.2x target).

Usage: python benchmarks/seed_cost.py --cache-dir DIR [--seeds 1,3] [--methods A,B] [--workers 2] [--rounds 1]

Every seed's models are built first (`python -m benchmark build`, not timed). Then, for each round, the grid
(`pytest suites/ --bench-fresh`) runs once per seed count, in turn, so the machine's load falls on both alike.
Each seed count's profile shares its image budget among the seeds (Profile.per_seed). Printed: each run's wall
time, the summed cell time per property, and every count's ratio to the first. Exit status 1 when a run writes
no record, 2 on bad input.
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


def grid(cache: Path, seeds: int, methods: str | None, workers: int, reports: Path) -> tuple[float, dict]:
    """Run the grid once on ``seeds`` training seeds; return (wall seconds, run record)."""
    cmd = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", "-n", str(workers),
           "--bench-profile", "quick", "--bench-cache-dir", str(cache), "--bench-reports-dir", str(reports),
           "--bench-model-seeds", str(seeds), "--bench-fresh", *(["--bench-methods", methods] if methods else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if not (reports / "run.json").exists():
        sys.exit(f"the grid on {seeds} seed(s) wrote no run record (exit {proc.returncode}):\n"
                 f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return wall, json.loads((reports / "run.json").read_text())


def cell_seconds(record: dict) -> dict[str, float]:
    """Summed cell time per property."""
    out: dict[str, float] = collections.Counter()
    for c in record["cells"]:
        out[c["suite"]] += c["seconds"]
    return dict(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", required=True, type=Path)
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
    for k in counts:
        subprocess.run([sys.executable, "-m", "benchmark", "build", "--profile", "quick", "--cache-dir",
                        str(args.cache_dir), "--model-seeds", str(k)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    walls: dict[int, list[float]] = collections.defaultdict(list)
    cells: dict[int, list[dict]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for k in counts:
                wall, record = grid(args.cache_dir, k, args.methods, args.workers, Path(tmp) / f"r{r}-k{k}")
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
    print(f"\nload average at the end: {' / '.join(load)}")
    for suite in sorted(cells[first][0]):
        parts = [f"{k} seed(s) {sum(c.get(suite, 0) for c in cells[k]) / args.rounds:.0f} s" for k in counts]
        print(f"  {suite:24s} " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
