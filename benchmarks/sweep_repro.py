"""Sweep reproducibility: run the strength sweep on two builds whose weights differ and count how many real methods'
detection limits agree (issue 31: >= 30 of 32).

Usage: python benchmarks/sweep_repro.py [--workers 2] [--model-seeds K] [--threads-a 2] [--threads-b 1]
       [--methods A,B] [--keep DIR]
       python benchmarks/sweep_repro.py --compare SWEEP_A.json SWEEP_B.json

Each build gets its own empty cache. Every level's world is built first with `python -m benchmark build --mark LEVEL`
on the build's torch threads, one model at a time (so a thread count, not the scheduler, decides the float sums, and
the weights differ), then `pytest suites/ -m sweep --bench-fresh` grades the levels from those caches. Both builds run
one snapshot of the checkout's code. Printed as Markdown: each level's flip rate in both builds, whether the weights
differ, the PASS <-> FAIL flips and the moves to or from INCONCLUSIVE of level verdicts, every detection limit
that differs with both builds' ranges (INCONCLUSIVE read as PASS, then as FAIL), and how many ranges are equal or
disjoint. Exit status: 0 when at most 1/16 of the real methods' limits differ (30 of 32), 1 when more do or a
step failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrain_repro import code_env, snapshot_code  # noqa: E402  (a sibling script, not a package)

from benchmark.models.parallel import SEQUENTIAL_ENV  # noqa: E402
from benchmark.running.sweep import levels_for, limit_ranges, outcome_from_dict  # noqa: E402
from benchmark.running.threads import child_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAX_DIFFERING = 1 / 16  # issue 31: detection limits agree for >= 30 of 32 real methods
DECIDED = ("PASS", "FAIL")


def run(cmd: list[str], cwd: Path, env: dict, what: str) -> subprocess.CompletedProcess:
    """Run a step; progress on stderr."""
    print(f"{dt.datetime.now():%H:%M:%S} {what}", file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def build_and_sweep(name: str, work: Path, code: Path, threads: int, args) -> tuple[dict, float, float]:
    """Build every level's world on ``threads`` threads in a fresh cache, then sweep it; (sweep.json, build s, sweep s)."""
    cache, reports = work / f"cache-{name}", work / f"reports-{name}"
    env = code_env(code, {**child_env(threads), SEQUENTIAL_ENV: "1"})
    t0 = time.perf_counter()
    for level in levels_for("quick"):
        cmd = [sys.executable, "-m", "benchmark", "build", "--profile", "quick", "--device", "cpu", "--cache-dir",
               str(cache), "--mark", f"{level.area}@{level.opacity}"]
        cmd += ["--model-seeds", str(args.model_seeds)] if args.model_seeds else []
        proc = run(cmd, code, env, f"build {name}: level {level.label} on {threads} thread(s)")
        # A level whose biased model does not learn the mark stops `build` with a message; the sweep excludes it.
        if proc.returncode != 0:
            if "did not learn" not in proc.stderr:
                sys.exit(f"build {name}, level {level.label} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
            print(f"  level {level.label}: {proc.stderr.strip().splitlines()[-1][:200]}", file=sys.stderr)
    built = time.perf_counter() - t0
    cmd = [sys.executable, "-m", "pytest", "suites/", "-m", "sweep", "-q", "-p", "no:cacheprovider", "-n",
           str(args.workers), "--bench-profile", "quick", "--bench-device", "cpu", "--bench-cache-dir", str(cache),
           "--bench-reports-dir", str(reports), "--bench-fresh"]
    cmd += ["--bench-model-seeds", str(args.model_seeds)] if args.model_seeds else []
    cmd += ["--bench-methods", args.methods] if args.methods else []
    t0 = time.perf_counter()
    # The sweep trains what `build` did not (a level whose biased model misses build's shortcut targets, which the
    # sweep still grades when over half the cats flip): on the build's threads too, so those weights differ as well.
    # With -n 2 each grading worker gets one thread in either build, so only training arithmetic differs.
    proc = run(cmd, code, env, f"sweep {name}")
    swept = time.perf_counter() - t0
    if not (reports / "sweep.json").is_file():
        sys.exit(f"sweep {name} wrote no sweep.json (exit {proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-1500:]}")
    trained = [line for line in proc.stdout.splitlines() if " trained in " in line]
    if trained:
        print(f"warning: sweep {name} trained {len(trained)} model(s) itself, on the build's threads",
              file=sys.stderr)
    return json.loads((reports / "sweep.json").read_text(encoding="utf-8")), built, swept


def real_methods(names: set[str]) -> list[str]:
    """The names that are not control methods."""
    from benchmark.methods import all_methods, discover

    discover()
    registry = all_methods()
    return sorted(n for n in names if n in registry and not registry[n].capabilities.control)


def compare(a: dict, b: dict) -> dict:
    """Detection limits and level verdicts of two sweeps, side by side."""
    # A method that applies at no level (N/A everywhere, e.g. a transformer method on the CNN) has no limit to agree on.
    graded = {m for m in set(a["detection_limits"]) & set(b["detection_limits"])
              if any(v["verdict"] != "N/A" for v in [*a["methods"][m].values(), *b["methods"][m].values()])}
    methods = real_methods(graded)
    limits = {m: (a["detection_limits"][m], b["detection_limits"][m]) for m in methods}
    flips, moves, kept = [], [], 0
    for m in methods:
        for label in sorted(set(a["methods"][m]) & set(b["methods"][m])):
            va, vb = a["methods"][m][label]["verdict"], b["methods"][m][label]["verdict"]
            if va == vb:
                kept += 1
            elif va in DECIDED and vb in DECIDED:
                flips.append((m, label, va, vb))
            else:
                moves.append((m, label, va, vb))
    differ = {m: ab for m, ab in limits.items() if ab[0] != ab[1]}
    ra, rb = ranges(a), ranges(b)
    area = {lv["label"]: lv["area"] for lv in a["levels"]}
    rank = lambda label: area[label] if label else float("inf")  # noqa: E731  ("none" is past the strongest level)
    contradict = {m: (ra[m], rb[m]) for m in methods
                  if rank(ra[m][1]) < rank(rb[m][0]) or rank(rb[m][1]) < rank(ra[m][0])}
    return {"methods": len(methods), "limits_agree": len(methods) - len(differ), "limits_differ": differ,
            "ranges_equal": sum(ra[m] == rb[m] for m in methods), "ranges_contradict": contradict,
            "ranges": {m: (ra[m], rb[m]) for m in differ},
            "level_verdicts_kept": kept, "pass_fail_flips": flips, "inconclusive_moves": moves}


def ranges(sweep: dict) -> dict[str, tuple[str | None, str | None]]:
    """Each method's detection-limit range (INCONCLUSIVE read as PASS, then as FAIL), recomputed from the levels'
    cells for a sweep.json written before ranges were recorded."""
    if "detection_limit_ranges" in sweep:
        return {m: tuple(r) for m, r in sweep["detection_limit_ranges"].items()}
    found = limit_ranges([outcome_from_dict(o) for o in sweep["outcomes"]])
    return {m: tuple(lv.label if lv else None for lv in r) for m, r in found.items()}


def target_met(result: dict) -> bool:
    """Whether at most MAX_DIFFERING of the real methods' detection limits differ (issue 31)."""
    return len(result["limits_differ"]) <= MAX_DIFFERING * result["methods"]


def levels_table(a: dict, b: dict) -> str:
    """Each level's realised footprint and flip rate in both builds."""
    rows = ["| level | footprint | flip rate A | flip rate B | graded A | graded B |", "|---|---|---|---|---|---|"]
    for la, lb in zip(a["levels"], b["levels"], strict=True):
        rows.append(f"| {la['label']} | {la['footprint']:.2%} | {la['flip_rate']:.1%} | {lb['flip_rate']:.1%} | "
                    f"{'yes' if la['learned'] else 'excluded'} | {'yes' if lb['learned'] else 'excluded'} |")
    return "\n".join(rows)


def render(result: dict) -> str:
    """The comparison as Markdown."""
    n, agree = result["methods"], result["limits_agree"]
    out = [f"Detection limits agree for **{agree} of {n}** real methods; level verdicts: "
           f"{result['level_verdicts_kept']} the same, **{len(result['pass_fail_flips'])} PASS <-> FAIL**, "
           f"{len(result['inconclusive_moves'])} to or from INCONCLUSIVE."]
    out.append(f"Their ranges (every INCONCLUSIVE level read as PASS, then as FAIL) are equal for "
               f"{result['ranges_equal']} and **disjoint for {len(result['ranges_contradict'])}**: "
               + (", ".join(result["ranges_contradict"]) or "no build contradicts the other") + ".")
    if result["limits_differ"]:
        def span(r):
            return f"{r[0] or 'none'} to {r[1] or 'none'}"

        out.append("\n| method | limit A | limit B | range A | range B |\n|---|---|---|---|---|")
        out += [f"| {m} | {la or 'none'} | {lb or 'none'} | {span(result['ranges'][m][0])} | "
                f"{span(result['ranges'][m][1])} |" for m, (la, lb) in result["limits_differ"].items()]
    for title, rows in (("PASS <-> FAIL", result["pass_fail_flips"]), ("INCONCLUSIVE moves", result["inconclusive_moves"])):
        if rows:
            out.append(f"\n{title}: " + "; ".join(f"{m} at {lv}: {va} -> {vb}" for m, lv, va, vb in rows))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model-seeds", type=int, default=None, help="training seeds per arm (default: the profile's)")
    p.add_argument("--threads-a", type=int, default=2)
    p.add_argument("--threads-b", type=int, default=1)
    p.add_argument("--methods", default=None, help="comma-separated subset (default: every method)")
    p.add_argument("--keep", default=None, metavar="DIR", help="keep builds and reports in DIR (new or empty)")
    p.add_argument("--compare", nargs=2, default=None, metavar=("SWEEP_A", "SWEEP_B"))
    args = p.parse_args(argv)
    if args.compare:
        try:
            a, b = (json.loads(Path(x).read_text(encoding="utf-8")) for x in args.compare)
        except (OSError, ValueError) as exc:
            print(f"error: --compare: {exc}", file=sys.stderr)
            return 2
        result = compare(a, b)
        print(render(result))
        return 0 if target_met(result) else 1
    if args.threads_a == args.threads_b or min(args.threads_a, args.threads_b, args.workers) < 1:
        print("error: --threads-a and --threads-b must be different counts >= 1 (the weights must differ), and "
              "--workers >= 1", file=sys.stderr)
        return 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sweep-repro-"))
    if work.exists() and any(work.iterdir()):
        print(f"error: --keep {work}: already holds files; name a new or empty folder", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_code(work / "code")
        a, build_a, sweep_a = build_and_sweep("a", work, work / "code", args.threads_a, args)
        b, build_b, sweep_b = build_and_sweep("b", work, work / "code", args.threads_b, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    result = compare(a, b)
    shas = [(la["label"], oa["card"].get("weights_sha256", "")[:12], ob["card"].get("weights_sha256", "")[:12])
            for la, oa, ob in zip(a["levels"], a["outcomes"], b["outcomes"], strict=True)]
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, {platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{load[0]:.2f}; -n {args.workers}; training seeds {args.model_seeds or 'the profile default'}; "
          f"A on {args.threads_a} thread(s): build {build_a:.0f} s, sweep {sweep_a:.0f} s; B on {args.threads_b}: "
          f"build {build_b:.0f} s, sweep {sweep_b:.0f} s\n")
    print("Biased weights (seed 0) per level, A / B: " + ", ".join(f"{lv} `{x}` / `{y}`" for lv, x, y in shas) + "\n")
    print(levels_table(a, b) + "\n")
    print(render(result))
    return 0 if target_met(result) else 1


if __name__ == "__main__":
    sys.exit(main())
