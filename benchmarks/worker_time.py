"""Where a cold ``-n N`` grid's wall time goes: each worker's busy and idle time, the run's start, end and tail, and the
work summed over the workers against the same grid's work in one process, run side by side on one model cache.

Usage: python benchmarks/worker_time.py [--workers 2] [--ref COMMIT] [--methods A,B] [--cache-dir DIR]

Both runs grade with nothing stored (a fresh copy of the models each), every process on one thread (the one process
too, with $SHORTCUT_BENCH_THREADS=1, so its passes are a worker's). A pytest plugin (``_clock_plugin.py``) stamps each
process's start, each test's start and finish, and its end. Printed per run: the wall time; before the first test and
after the last (the run's fixed cost: interpreters, collection, workers starting, reports written); the tail (the last
worker's finish minus the first's); per worker its tests, busy time (the sum of its tests' times, setup to teardown)
and idle time between its tests; then the work under ``-n N`` (busy summed over workers) against the one process's, in
all and per suite file. Work near 1.0 of one process's and idle near 0 say the workers share no work and wait on
nothing: the wall is then the work over N plus the fixed cost, and only less work makes it shorter.

With --ref COMMIT both runs grade only that commit's tests on one training seed (as store_speed.py --same-grid).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _clock_plugin import ENV_VAR  # noqa: E402
from store_speed import ROOT, _collected, _fresh, _same_grid, require_commit, run_grid, worktree  # noqa: E402


@dataclass(frozen=True)
class Clock:
    """One process's readings: when it started and ended, and each test's (id, start, finish)."""

    start: float
    end: float
    tests: tuple[tuple[str, float, float], ...]

    @property
    def busy(self) -> float:
        """Seconds inside tests."""
        return sum(stop - begin for _, begin, stop in self.tests)

    @property
    def idle(self) -> float:
        """Seconds between one test's finish and the next one's start."""
        return sum(max(0.0, b[1] - a[2]) for a, b in zip(self.tests, self.tests[1:], strict=False))


def read_clock(path: Path) -> Clock:
    """The readings ``_clock_plugin`` wrote to ``path``."""
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    begun, tests = {}, []
    for e in events:
        if e["event"] == "begin":
            begun[e["id"]] = e["t"]
        elif e["event"] == "end" and e["id"] in begun:
            tests.append((e["id"], begun.pop(e["id"]), e["t"]))
    return Clock(events[0]["t"], events[-1]["t"], tuple(tests))


def grading_clocks(folder: Path) -> dict[str, Clock]:
    """{process: its clock} of the processes that ran tests: the workers, or the controller when there were none (an
    xdist controller logs its workers' tests as their reports arrive, so its own readings would count them twice)."""
    clocks = {p.stem: read_clock(p) for p in sorted(folder.glob("*.jsonl"))}
    workers = {name: c for name, c in clocks.items() if name != "controller"}
    return workers or {name: c for name, c in clocks.items() if c.tests}


def run_summary(clocks: dict[str, Clock], launched: float, exited: float) -> dict:
    """Wall, work, the fixed cost before the first test and after the last, and the tail of one run's ``clocks``."""
    ran = [c for c in clocks.values() if c.tests]
    first = min(c.tests[0][1] for c in ran)
    lasts = [c.tests[-1][2] for c in ran]
    return {"wall": exited - launched, "work": sum(c.busy for c in ran), "idle": sum(c.idle for c in ran),
            "before": first - launched, "after": exited - max(lasts), "tail": max(lasts) - min(lasts)}


def by_file(clocks: dict[str, Clock]) -> dict[str, float]:
    """Busy seconds per suite file, summed over ``clocks``."""
    out: collections.Counter = collections.Counter()
    for c in clocks.values():
        for nodeid, begin, stop in c.tests:
            out[nodeid.split("::")[0]] += stop - begin
    return dict(out)


def _timed(tests: list[str], cache: Path, out: Path, clock: Path, workers: int, methods: str | None,
           env: dict) -> tuple[float, float]:
    """Grade ``tests`` once, stamped by the plugin into ``clock``; (launched, exited) in ``time.time()``."""
    clock.mkdir(parents=True)
    here = str(Path(__file__).resolve().parent)
    run_env = {**env, ENV_VAR: str(clock), "PYTHONPATH": os.pathsep.join(filter(None, [env.get("PYTHONPATH"), here]))}
    launched, exited, _ = run_grid(ROOT, cache, out, workers if workers > 1 else 0, methods, run_env, tests,
                                   extra=("-p", "_clock_plugin"))
    return launched, exited


def _ref_tests(ref: str, cache: Path, env: dict, methods: str | None) -> list[str]:
    """This checkout's arguments for ``ref``'s grid (its node ids, one training seed), collected in a worktree."""
    with tempfile.TemporaryDirectory() as tmp, worktree(ref, Path(tmp) / "ref") as tree:
        ids = _collected(tree, cache, {**env, "PYTHONPATH": str(tree)}, methods)
    return _same_grid(ids, cache, env, methods)


def _print_run(label: str, clocks: dict[str, Clock], s: dict) -> None:
    print(f"{label}: wall {s['wall']:.1f} s; before the first test {s['before']:.1f} s, after the last "
          f"{s['after']:.1f} s; tail {s['tail']:.1f} s; work {s['work']:.1f} s; idle between tests {s['idle']:.1f} s")
    for name, c in clocks.items():
        print(f"  {name:10s} {len(c.tests):4d} tests, busy {c.busy:7.1f} s, idle between tests {c.idle:5.1f} s")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ref", default=None, help="grade only this commit's tests, on one training seed")
    parser.add_argument("--methods", default=None, help="comma-separated subset (default: every method)")
    parser.add_argument("--cache-dir", default=None, help="models cache (default: a fresh temporary folder)")
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error(f"--workers must be 2 or more (the one-process run is always made), not {args.workers}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    env = {**os.environ, "SHORTCUT_BENCH_THREADS": "1"}
    env.pop("SHORTCUT_BENCH_FRESH", None)
    if args.ref:
        require_commit(args.ref)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = Path(args.cache_dir) if args.cache_dir else tmp / "cache"
        subprocess.run([sys.executable, "-m", "benchmark", "build", "--profile", "quick", "--cache-dir", str(cache),
                        "--model-seeds", "1"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        tests = _ref_tests(args.ref, cache, env, args.methods) if args.ref else ["suites/", "--bench-model-seeds", "1"]
        runs = {}
        for label, workers in ((f"-n {args.workers}", args.workers), ("one process", 1)):
            folder = tmp / label.replace(" ", "_")
            launched, exited = _timed(tests, _fresh(cache, folder / "cache"), folder / "out", folder / "clock",
                                      workers, args.methods, env)
            clocks = grading_clocks(folder / "clock")
            runs[label] = (clocks, run_summary(clocks, launched, exited))
    load = os.getloadavg()
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}  {platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; one thread per process; grid: "
          + (f"{args.ref}'s tests on one training seed" if args.ref else "suites/ on one training seed"))
    for label, (clocks, summary) in runs.items():
        _print_run(label, clocks, summary)
    (many, s_many), (one, s_one) = runs.values()
    print(f"work under -n {args.workers} / work in one process: {s_many['work'] / s_one['work']:.3f}; wall: "
          f"{s_many['wall'] / s_one['wall']:.3f}")
    files_many, files_one = by_file(many), by_file(one)
    for name in sorted(files_one, key=files_one.get, reverse=True):
        print(f"  {name:45s} one {files_one[name]:7.1f} s | -n {args.workers} {files_many.get(name, 0.0):7.1f} s | "
              f"{files_many.get(name, 0.0) / files_one[name]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
