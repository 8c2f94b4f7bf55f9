"""Time the grid cold (models cached, nothing stored), warm (everything stored) and after adding one method, against
the same grid at an older commit, side by side on one machine and one model cache.

Usage: python benchmarks/store_speed.py [--ref a2ddf37] [--workers 2] [--methods A,B] [--add Saliency]
       [--add-module FILE ...] [--cache-dir DIR] [--skip-ref] [--same-grid] [--pairs K]

The grid has grown since a2ddf37 (four training seeds instead of one, more metrics and methods). With --same-grid
this checkout grades only the older commit's grid: the tests the older commit collects (by node id, which must all
exist here) on one training seed (--bench-model-seeds 1), so both sides grade the same cells; the older commit grades
its own grid on one training seed too where its pytest knows that option (older ones train one seed only).

A cold run can move by tens of seconds on a 2-core machine (RESULTS.md), so --pairs K times both grids K times, alternating
which goes first, each run on a fresh copy of the models with nothing stored, and prints each pair's ratio with their
median and range; the warm run then reads the last cold run's store.

The older commit runs from a git worktree with this checkout's interpreter (PYTHONPATH points at the worktree,
so its own `benchmark` package and pytest plugin are loaded); both grids read the same trained models, which are
built first by each commit's own builder (not timed). Printed: each run's wall time, the ratios, the result store's answer, and whether the
leaderboards (md, csv, json) are byte-identical to the cold run's, bar the line that names the git commit (the older
commit's are printed, not failed on: its report's format may differ).

--add-module FILE (repeatable) times adding a method as a user adds one: the file, named in $SHORTCUT_BENCH_METHODS,
graded on a copy of the warm grid's store (everything else is read from it), then graded cold with the file on a copy
of the models alone, whose leaderboards the added run's must equal byte for byte. ``benchmarks/new_methods/`` has a
gradient method and a perturbation method (a KernelShap variant) that no stored grid has seen.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOARDS = ("leaderboard.md", "leaderboard.csv", "leaderboard.json")


def run_grid(root: Path, cache: Path, out: Path, workers: int, methods: str | None, env: dict,
             tests: list[str] | None = None, extra: tuple[str, ...] = ()) -> tuple[float, float, str]:
    """Grade ``tests`` (default: suites/) in ``root`` with ``workers`` xdist workers (0: in one process) and ``extra``
    pytest arguments; (launched, exited) as ``time.time()`` stamps and pytest's output. Exits when no leaderboard came."""
    cmd = [sys.executable, "-m", "pytest", *(tests or ["suites/"]), "-q", "-p", "no:cacheprovider", *extra,
           "--bench-cache-dir", str(cache), "--bench-reports-dir", str(out), "-n", str(workers)]
    if methods:
        cmd += ["--bench-methods", methods]
    launched = time.time()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    exited = time.time()
    if not (out / "leaderboard.md").exists():
        sys.exit(f"{root}: no leaderboard (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return launched, exited, proc.stdout


def _grid(root: Path, cache: Path, out: Path, workers: int, methods: str | None, env: dict,
          tests: list[str] | None = None) -> tuple[float, str]:
    launched, exited, stdout = run_grid(root, cache, out, workers, methods, env, tests)
    store = next((line for line in stdout.splitlines() if line.startswith("result store")), "")
    return exited - launched, store


def require_commit(ref: str) -> None:
    """Exit with one line when git does not know ``ref`` as a commit of this clone (checked before any model is
    built: on an empty cache the build trains for minutes)."""
    known = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=ROOT,
                           capture_output=True, text=True)
    if known.returncode != 0:
        sys.exit(f"--ref {ref}: git knows no such commit in {ROOT} (give a commit hash, tag or branch of this clone)")


@contextlib.contextmanager
def worktree(ref: str, where: Path):
    """A detached git worktree of ``ref`` at ``where``, removed afterwards; exits with one line when git does not know
    ``ref`` as a commit."""
    require_commit(ref)
    subprocess.run(["git", "worktree", "add", "--detach", str(where), ref], cwd=ROOT, check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT, capture_output=True)


def _collected(root: Path, cache: Path, env: dict, methods: str | None = None) -> list[str]:
    """The node ids of the grid's tests that ``root``'s checkout collects (for ``methods`` only, where given)."""
    subset = ["--bench-methods", methods] if methods else []
    proc = subprocess.run([sys.executable, "-m", "pytest", "suites/", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--bench-cache-dir", str(cache), *subset], cwd=root, capture_output=True, text=True, env=env)
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    if not ids:
        sys.exit(f"{root}: collected no tests (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return ids


def _same_grid(ref_ids: list[str], cache: Path, env: dict, methods: str | None = None) -> list[str]:
    """This checkout's arguments for the older commit's grid: its node ids, one training seed."""
    missing = sorted(set(ref_ids) - set(_collected(ROOT, cache, env, methods)))
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


def _without(tests: list[str] | None, method: str) -> list[str] | None:
    """``tests`` less ``method``'s own, for the grid before it is added (None, the whole grid, stays None): with
    --same-grid they name every method's tests, and pytest stops on one it was not asked to collect."""
    if tests is None:
        return None
    from benchmark.methods import all_methods
    from benchmark.running.scheduling import method_of

    names = list(all_methods())
    return [t for t in tests if method_of(t, names) != method]


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
    parser.add_argument("--pairs", type=int, default=1, help="time the older commit and the cold grid this many times, "
                                                                "alternating which runs first (default 1)")
    parser.add_argument("--add-module", action="append", default=[], type=Path, metavar="FILE",
                        help="a methods file to add to the warm grid, as $SHORTCUT_BENCH_METHODS (repeatable)")
    args = parser.parse_args(argv)
    missing = [str(m) for m in args.add_module if not m.is_file()]
    if missing:
        parser.error(f"--add-module: no such file: {', '.join(missing)}")
    if args.pairs < 1:
        parser.error(f"--pairs must be 1 or more, not {args.pairs}")
    if args.pairs > 1 and args.skip_ref:
        parser.error("--pairs times the older commit beside this checkout: drop --skip-ref")
    if args.add_module and args.same_grid:
        parser.error("--add-module adds methods to this checkout's grid; --same-grid grades the older commit's tests")
    if args.same_grid and args.skip_ref:
        parser.error("--same-grid grades the older commit's tests, so it needs that commit: drop --skip-ref")
    return args


def _fresh(cache: Path, dest: Path) -> Path:
    """A copy of ``cache``'s models with nothing stored, so that every timed run starts cold."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(cache, dest, ignore=shutil.ignore_patterns("results"))
    return dest


def _ref_seeds(tree: Path, env: dict) -> list[str]:
    """``--bench-model-seeds 1`` where the older commit's pytest knows the option (it trains several seeds by default),
    else nothing (it predates training seeds and grades one)."""
    helps = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"], cwd=tree,
                           capture_output=True, text=True, env=env).stdout
    return ["--bench-model-seeds", "1"] if "--bench-model-seeds" in helps else []


def _pairs(args, cache: Path, tmp: Path, env: dict, walls: dict, notes: dict, same: dict) -> list[str] | None:
    """Time the older commit's grid and this checkout's cold grid ``--pairs`` times, alternating which goes first."""
    with worktree(args.ref, tmp / "ref") as tree:
        ref_env = {**env, "PYTHONPATH": str(tree)}
        # The older commit may key its models differently; its own builder trains what it lacks, untimed,
        # so that neither grid's wall time includes training.
        subprocess.run([sys.executable, "-m", "benchmark", "build", "--profile", "quick", "--cache-dir", str(cache)],
                       cwd=tree, check=True, stdout=subprocess.DEVNULL, env=ref_env)
        ref_tests = ["suites/", *_ref_seeds(tree, ref_env)] if args.same_grid else None
        tests = (_same_grid(_collected(tree, cache, ref_env, args.methods), cache, env, args.methods)
                 if args.same_grid else None)
        runs = {"ref": (tree, "ref-cache", "ref-out", ref_env, ref_tests), "cold": (ROOT, "cold-cache", "cold", env, tests)}
        for i in range(1, args.pairs + 1):
            # Alternate the order, so that a machine that slows or speeds up through the runs favours neither.
            for way in ("ref", "cold") if i % 2 else ("cold", "ref"):
                root, cache_name, out, run_env, run_tests = runs[way]
                walls[f"{way} {i}"], notes[f"{way} {i}"] = _grid(root, _fresh(cache, tmp / cache_name), tmp / f"{out}{i}",
                                                                 args.workers, args.methods, run_env, run_tests)
            same[f"ref {i}"] = _boards(tmp / f"ref-out{i}") == _boards(tmp / f"cold{i}")
            if i > 1:
                same[f"cold {i}"] = _boards(tmp / f"cold{i}") == _boards(tmp / "cold1")
    return tests


def _summary(walls: dict, pairs: int) -> str:
    """Each pair's ratio of cold to the older commit, their median and range."""
    ratios = sorted(walls[f"cold {i}"] / walls[f"ref {i}"] for i in range(1, pairs + 1))
    return (f"  cold / ref per pair: {', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}, "
            f"range {ratios[0]:.3f}-{ratios[-1]:.3f} over {pairs} pair(s)")


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    env = {**os.environ}
    env.pop("SHORTCUT_BENCH_FRESH", None)
    if not args.skip_ref:
        require_commit(args.ref)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = Path(args.cache_dir) if args.cache_dir else tmp / "cache"
        seeds = ["--model-seeds", "1"] if args.same_grid else []  # --same-grid grades one training seed only
        subprocess.run([sys.executable, "-m", "benchmark", "build", "--profile", "quick", "--cache-dir", str(cache),
                        *seeds], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        walls, notes, same = {}, {}, {}
        tests = None
        if args.skip_ref:
            walls["cold 1"], notes["cold 1"] = _grid(ROOT, _fresh(cache, tmp / "cold-cache"), tmp / "cold1",
                                                     args.workers, args.methods, env)
        else:
            tests = _pairs(args, cache, tmp, env, walls, notes, same)
        last = tmp / "cold-cache"  # the last cold run's store, whole: the warm run reads every result from it
        walls["warm"], notes["warm"] = _grid(ROOT, last, tmp / "warm", args.workers, args.methods, env, tests)
        same["warm"] = _boards(tmp / "warm") == _boards(tmp / "cold1")
        if args.add and args.methods:
            without = ",".join(m for m in args.methods.split(",") if m != args.add)
            added_cache = _fresh(cache, tmp / "added-cache")
            _grid(ROOT, added_cache, tmp / "before-add", args.workers, without, env, _without(tests, args.add))
            walls["add"], notes["add"] = _grid(ROOT, added_cache, tmp / "added", args.workers, args.methods, env,
                                               tests)
            same["add"] = _boards(tmp / "added") == _boards(tmp / "cold1")
        for module in args.add_module:
            _add_module(module, last, tmp, args.workers, args.methods, env, walls, notes, same)
    _print(args, walls, notes, same, tests)
    # The older commit's leaderboards differ wherever its report's format did: printed, not failed on.
    return 0 if all(ok for way, ok in same.items() if not way.startswith("ref ")) else 1


def _print(args, walls: dict, notes: dict, same: dict, tests: list[str] | None) -> None:
    load = os.getloadavg()
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}  {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; -n {args.workers}; methods: {args.methods or 'all'}"
          + (f"; here: {args.ref}'s {len(tests) - 2} tests on one training seed" if tests else ""))
    for way, wall in walls.items():
        pair = way.split()[-1]
        ratio = (f"  ({wall / walls[f'ref {pair}']:.2f} of {args.ref})"
                 if way.startswith("cold ") and f"ref {pair}" in walls else "")
        print(f"  {way:7s} {wall:8.1f} s{ratio}  {notes.get(way, '')}")
    if not args.skip_ref:
        print(_summary(walls, args.pairs))
    for way, ok in same.items():
        against = (f"a cold run with {way[4:]}" if way.startswith("add ") else
                   f"cold {way.split()[-1]}" if way.startswith("ref ") else "cold 1")
        print(f"  leaderboards {way} vs {against}: {'byte-identical' if ok else 'DIFFER'}")


if __name__ == "__main__":
    sys.exit(main())
