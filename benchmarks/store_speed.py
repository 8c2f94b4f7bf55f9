"""Time the grid cold (models cached, nothing stored), warm (everything stored) and after adding one method, against
the same grid at an older commit, side by side on one machine and one model cache.

Usage: python benchmarks/store_speed.py [--ref a2ddf37] [--workers 2] [--methods A,B] [--add Saliency]
       [--cache-dir DIR] [--skip-ref] [--same-grid]

The grid has grown since a2ddf37 (four training seeds instead of one, more metrics and methods). With --same-grid
this checkout grades only the older commit's grid: the tests the older commit collects (by node id, which must all
exist here) on one training seed (--bench-model-seeds 1), so both sides grade the same cells.

The older commit runs from a git worktree with this checkout's interpreter (PYTHONPATH points at the worktree,
so its own `benchmark` package and pytest plugin are loaded); both grids read the same trained models, which are
built first by each commit's own builder (not timed). Printed: each run's wall time, the ratios, the result store's answer, and whether the
leaderboards (md, csv, json) are byte-identical to the cold run's, bar the line that names the git commit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOARDS = ("leaderboard.md", "leaderboard.csv", "leaderboard.json")


def _grid(root: Path, cache: Path, out: Path, workers: int, methods: str | None, env: dict,
          tests: list[str] | None = None) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "pytest", *(tests or ["suites/"]), "-q", "-p", "no:cacheprovider",
           "--bench-cache-dir", str(cache), "--bench-reports-dir", str(out), "-n", str(workers)]
    if methods:
        cmd += ["--bench-methods", methods]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if not (out / "leaderboard.md").exists():
        sys.exit(f"{root}: no leaderboard (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    store = next((line for line in proc.stdout.splitlines() if line.startswith("result store")), "")
    return wall, store


def _collected(root: Path, cache: Path, env: dict) -> list[str]:
    """The node ids of the grid's tests that ``root``'s checkout collects."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "suites/", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--bench-cache-dir", str(cache)], cwd=root, capture_output=True, text=True, env=env)
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    if not ids:
        sys.exit(f"{root}: collected no tests (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return ids


def _same_grid(ref_ids: list[str], cache: Path, env: dict) -> list[str]:
    """This checkout's arguments for the older commit's grid: its node ids, one training seed."""
    missing = sorted(set(ref_ids) - set(_collected(ROOT, cache, env)))
    if missing:
        sys.exit(f"--same-grid: {len(missing)} of the older commit's tests do not exist here, e.g. {missing[0]}")
    return [*ref_ids, "--bench-model-seeds", "1"]


def _boards(out: Path) -> list[bytes]:
    # The git line names the commit graded; everything else must match byte for byte.
    return [b"\n".join(line for line in (out / name).read_bytes().splitlines() if b"git `" not in line)
            for name in BOARDS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="a2ddf37", help="the older commit to compare with (default a2ddf37)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", default=None, help="comma-separated subset (default: every method)")
    parser.add_argument("--add", default=None, help="a method graded cold with the rest, left out of the warm grid and "
                                                    "then added (default: none)")
    parser.add_argument("--cache-dir", default=None, help="models cache (default: a fresh temporary folder)")
    parser.add_argument("--skip-ref", action="store_true", help="time this checkout alone")
    parser.add_argument("--same-grid", action="store_true", help="grade here only the older commit's tests, on one "
                                                                 "training seed")
    args = parser.parse_args(argv)
    if args.same_grid and args.skip_ref:
        parser.error("--same-grid grades the older commit's tests, so it needs that commit: drop --skip-ref")
    env = {**os.environ}
    env.pop("SHORTCUT_BENCH_FRESH", None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = Path(args.cache_dir) if args.cache_dir else tmp / "cache"
        subprocess.run([sys.executable, "-m", "benchmark", "build", "--profile", "quick", "--cache-dir", str(cache)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        shutil.rmtree(cache / "results", ignore_errors=True)  # cold: nothing stored
        walls, notes = {}, {}
        if not args.skip_ref:
            tree = tmp / "ref"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.ref], cwd=ROOT, check=True,
                           capture_output=True)
            ref_env = {**env, "PYTHONPATH": str(tree)}
            try:
                # The older commit may key its models differently; its own builder trains what it lacks, untimed,
                # so that neither grid's wall time includes training.
                subprocess.run([sys.executable, "-m", "benchmark", "build", "--profile", "quick", "--cache-dir",
                                str(cache)], cwd=tree, check=True, stdout=subprocess.DEVNULL, env=ref_env)
                walls["ref"], _ = _grid(tree, cache, tmp / "ref-out", args.workers, args.methods, ref_env)
                ref_ids = _collected(tree, cache, ref_env) if args.same_grid else None
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        tests = _same_grid(ref_ids, cache, env) if args.same_grid else None
        walls["cold"], notes["cold"] = _grid(ROOT, cache, tmp / "cold", args.workers, args.methods, env, tests)
        walls["warm"], notes["warm"] = _grid(ROOT, cache, tmp / "warm", args.workers, args.methods, env, tests)
        same = {"warm": _boards(tmp / "warm") == _boards(tmp / "cold")}
        if not args.skip_ref:
            same["ref"] = _boards(tmp / "ref-out") == _boards(tmp / "cold")
        if args.add and args.methods:
            without = ",".join(m for m in args.methods.split(",") if m != args.add)
            added_cache = tmp / "added-cache"
            shutil.copytree(cache, added_cache, ignore=shutil.ignore_patterns("results"))
            _grid(ROOT, added_cache, tmp / "before-add", args.workers, without, env, tests)
            walls["add"], notes["add"] = _grid(ROOT, added_cache, tmp / "added", args.workers, args.methods, env,
                                               tests)
            same["add"] = _boards(tmp / "added") == _boards(tmp / "cold")
    load = os.getloadavg()
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; -n {args.workers}; methods: {args.methods or 'all'}"
          + (f"; here: {args.ref}'s {len(ref_ids)} tests on one training seed" if tests else ""))
    for way, wall in walls.items():
        ratio = f"  ({wall / walls['ref']:.2f} of {args.ref})" if "ref" in walls and way != "ref" else ""
        print(f"  {way:5s} {wall:8.1f} s{ratio}  {notes.get(way, '')}")
    for way, ok in same.items():
        print(f"  leaderboards {way} vs cold: {'byte-identical' if ok else 'DIFFER'}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
