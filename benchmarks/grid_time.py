"""Time the full grid (`pytest suites/`) on a warm cache and print it against the 10-minute target, with the share
of each property in the graded cells' time.

Usage: python benchmarks/grid_time.py [--workers 2] [--profile quick] [--cache-dir DIR] [--compare reports/baseline.json]

The cache is warmed first (a `python -m benchmark build`, not timed), so the figure is grading alone. With
--compare the grid grades the baseline's pinned models instead (nothing is trained).
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
TARGET_S = 600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--cache-dir", default=None, help="models/data cache (default: a fresh temporary folder)")
    parser.add_argument("--compare", default=None, help="grade the pinned models of this baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir) if args.cache_dir else Path(tmp) / "cache"
        common = ["--bench-profile", args.profile, "--bench-cache-dir", str(cache)]
        if not args.compare:
            subprocess.run([sys.executable, "-m", "benchmark", "build", "--profile", args.profile, "--cache-dir",
                            str(cache)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        reports = Path(tmp) / "reports"
        cmd = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", "-n", str(args.workers),
               *common, "--bench-reports-dir", str(reports)]
        if args.compare:
            cmd += ["--bench-compare", args.compare]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if not (reports / "run.json").exists():
            sys.exit(f"the grid wrote no run record (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        record = json.loads((reports / "run.json").read_text())
    per_suite = collections.Counter()
    for c in record["cells"]:
        per_suite[c["suite"]] += c["seconds"]
    total = sum(per_suite.values())
    print(f"profile {args.profile}, {args.workers} workers: {len(record['cells'])} cells, "
          f"{len(record.get('checks', {}))} contract checks, {len(record.get('samples', []))} graded images")
    print(f"wall time {wall:.0f} s = {wall / TARGET_S:.2f} of the {TARGET_S:.0f} s target")
    for suite, seconds in per_suite.most_common():
        print(f"  {suite:24s} {seconds:7.1f} s of cell time ({seconds / total:.0%})")


if __name__ == "__main__":
    main()
