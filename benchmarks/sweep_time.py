"""Time the strength sweep (`pytest suites/ -m sweep`) from a cold model cache, models included, against the
30-minute target, and print each method's detection limit and the excluded levels.

Usage: python benchmarks/sweep_time.py [--workers 2] [--profile quick] [--cache-dir DIR] [--reports-dir DIR]

Without --cache-dir the cache is a fresh temporary folder, so every level's models are trained inside the timed
run (the issue's budget includes them); with one, whatever it already holds is reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1800.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--cache-dir", default=None, help="models/data cache (default: a fresh temporary folder)")
    parser.add_argument("--reports-dir", default=None, help="where sweep.json/md/png go (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir) if args.cache_dir else Path(tmp) / "cache"
        reports = Path(args.reports_dir) if args.reports_dir else Path(tmp) / "reports"
        cmd = [sys.executable, "-m", "pytest", "suites/", "-m", "sweep", "-q", "-p", "no:cacheprovider", "-n",
               str(args.workers), "--bench-profile", args.profile, "--bench-cache-dir", str(cache),
               "--bench-reports-dir", str(reports)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if not (reports / "sweep.json").exists():
            sys.exit(f"the sweep wrote no sweep.json (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        result = json.loads((reports / "sweep.json").read_text())
    print(f"profile {args.profile}, {args.workers} workers: wall time {wall:.0f} s = {wall / TARGET_S:.2f} of the "
          f"{TARGET_S:.0f} s target (models included{'' if not args.cache_dir else ', from ' + str(cache)})")
    for lv in result["levels"]:
        state = "included" if lv["learned"] else f"EXCLUDED ({lv['excluded']})"
        print(f"  level {lv['label']:>5}: footprint {lv['footprint']:.2%}, flip rate {lv['flip_rate']:.1%}, {state}")
    limits = result["detection_limits"]
    for m in sorted(limits, key=lambda m: (limits[m] is None, m)):
        print(f"  {m:28s} detection limit {limits[m] or 'none'}")


if __name__ == "__main__":
    main()
