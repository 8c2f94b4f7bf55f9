"""Time the grid cold (models cached, nothing stored), warm (everything stored) and after adding one method, against
the same grid at an older commit, side by side on one machine and one model cache.

Usage: python benchmarks/store_speed.py [--ref a2ddf37] [--workers 2] [--methods A,B] [--add Saliency]
       [--add-module FILE ...] [--cache-dir DIR] [--skip-ref] [--same-grid]

The grid has grown since a2ddf37 (four training seeds instead of one, more metrics and methods). With --same-grid
this checkout grades only the older commit's grid: the tests the older commit collects (by node id, which must all
exist here) on one training seed (--bench-model-seeds 1), so both sides grade the same cells.

The older commit runs from a git worktree with this checkout's interpreter (PYTHONPATH points at the worktree,
so its own `benchmark` package and pytest plugin are loaded); both grids read the same trained models, which are
built first by each commit's own builder (not timed). Printed: each run's wall time, the ratios, the result store's answer, and whether the
leaderboards (md, csv, json) are byte-identical to the cold run's, bar the line that names the git commit.

--add-module FILE (repeatable) times adding a method as a user adds one: the file, named in $SHORTCUT_BENCH_METHODS,
graded on a copy of the warm grid's store (everything else is read from it), then graded cold with the file on a copy
of the models alone, whose leaderboards the added run's must equal byte for byte. ``benchmarks/new_methods/`` has a
gradient method and a perturbation method (a KernelShap variant) that no stored grid has seen.
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


def _add_module(module: Path, cache: Path, tmp: Path, workers: int, methods: str | None, env: dict,
                walls: dict, notes: dict, same: dict) -> None:
    """Grade the grid with ``module``'s methods added to a copy of the warm store, then cold with them, and compare."""
    way = f"add {module.stem}"
    mod_env = {**env, "SHORTCUT_BENCH_METHODS": ",".join(filter(None, [env.get("SHORTCUT_BENCH_METHODS"),
                                                                       str(module.resolve())]))}
    warm_copy, cold_copy = tmp / f"{module.stem}-warm", tmp / f"{module.stem}-cold"
    shutil.copytree(cache, warm_copy)  # the warm grid's store: only the added method is graded
    shutil.copytree(cache, cold_copy, ignore=shutil.ignore_patterns("results"))
    before = _entries(warm_copy)
    walls[way], notes[way] = _grid(ROOT, warm_copy, tmp / f"{module.stem}-added", workers, methods, mod_env)
    graded = {kind: n - before.get(kind, 0) for kind, n in _entries(warm_copy).items() if n != before.get(kind, 0)}
    notes[way] = "graded and stored: " + (", ".join(f"{n} {kind}" for kind, n in graded.items()) or "nothing")
    walls[f"cold {module.stem}"], notes[f"cold {module.stem}"] = _grid(ROOT, cold_copy, tmp / f"{module.stem}-cold-out",
                                                                       workers, methods, mod_env)
    same[way] = _boards(tmp / f"{module.stem}-added") == _boards(tmp / f"{module.stem}-cold-out")
    for folder in (warm_copy, cold_copy):
        shutil.rmtree(folder, ignore_errors=True)


def _entries(cache: Path) -> dict[str, int]:
    """The result store's entries under ``cache`` by kind (under -n N the workers' lookups are not printed)."""
    from benchmark.running.store import store_contents

    return {kind: n for kind, (n, _) in store_contents(cache).items()}


def _boards(out: Path) -> list[bytes]:
    # The git line names the commit graded; everything else must match byte for byte.
    return [b"\n".join(line for line in (out / name).read_bytes().splitlines() if b"git `" not in line)
            for name in BOARDS]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
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
    parser.add_argument("--add-module", action="append", default=[], type=Path, metavar="FILE",
                        help="a methods file to add to the warm grid, as $SHORTCUT_BENCH_METHODS (repeatable)")
    args = parser.parse_args(argv)
    missing = [str(m) for m in args.add_module if not m.is_file()]
    if missing:
        parser.error(f"--add-module: no such file: {', '.join(missing)}")
    if args.add_module and args.same_grid:
        parser.error("--add-module adds methods to this checkout's grid; --same-grid grades the older commit's tests")
    if args.same_grid and args.skip_ref:
        parser.error("--same-grid grades the older commit's tests, so it needs that commit: drop --skip-ref")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
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
        for module in args.add_module:
            _add_module(module, cache, tmp, args.workers, args.methods, env, walls, notes, same)
    load = os.getloadavg()
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; -n {args.workers}; methods: {args.methods or 'all'}"
          + (f"; here: {args.ref}'s {len(ref_ids)} tests on one training seed" if tests else ""))
    for way, wall in walls.items():
        ratio = f"  ({wall / walls['ref']:.2f} of {args.ref})" if "ref" in walls and way != "ref" else ""
        print(f"  {way:5s} {wall:8.1f} s{ratio}  {notes.get(way, '')}")
    for way, ok in same.items():
        against = f"a cold run with {way[4:]}" if way.startswith("add ") else "cold"
        print(f"  leaderboards {way} vs {against}: {'byte-identical' if ok else 'DIFFER'}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
