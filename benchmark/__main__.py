"""Command line: ``python -m benchmark list methods|properties|profiles``, ``build``, ``report``, ``merge``,
``baseline``, ``compare``, ``grade``."""

from __future__ import annotations

# Each subcommand imports what it needs inside its function: report/merge/compare work on JSON and would otherwise pay
# for torch, Captum and Quantus (2.0 s measured on 2 cores) that only build, grade and list need.
import argparse
import json
import sys
from pathlib import Path

from benchmark.errors import BenchmarkError, ConfigError


def _list(what: str) -> str:
    if what == "methods":
        from benchmark.methods.listing import format_method_table
        from benchmark.regression.baseline import DEFAULT_PATH
        from benchmark.reporting.redundancy import equivalents_in_baseline

        return format_method_table("cheap", *equivalents_in_baseline(DEFAULT_PATH))
    if what == "properties":
        from tabulate import tabulate

        from benchmark.grading.properties import ARROW, PROPERTIES
        from benchmark.grading.verdict import standard

        rows = [[p.key, p.version, m.name, ARROW[m.direction], standard(p, m), ", ".join(p.beat)
                 + (" + control model" if p.false_alarm else "") + (" (informational)" if p.informational else "")
                 + (f"; not voting: {m.no_vote.split(':')[0]}" if m.no_vote else "")]
                for p in PROPERTIES.values() for m in p.metrics]
        return tabulate(rows, headers=["suite", "version", "metric", "dir", "pass", "must beat"])
    from tabulate import tabulate

    from benchmark.profiles import PROFILES

    rows = [[p.name, p.arch if p.arch == "cnn" else f"resnet-{p.depth}", p.image_size, p.n_train, p.epochs,
             p.model_seeds, p.method_level, p.n_eval, "all" if p.n_map_only is None else p.n_map_only, p.description]
            for p in PROFILES.values()]
    return tabulate(rows, headers=["profile", "model", "px", "train images", "epochs", "training seeds", "methods",
                                   "graded (model calls)", "graded (map-only)", "about"])


def _copy_figures(sources: list[Path], out: Path) -> None:
    """Copy the shards' figures of flipped examples (one per shard, numbered when several)."""
    import shutil

    from benchmark.reporting.html import FIGURE_GLOB

    figures = [f for src in sources for f in sorted(Path(src).glob(FIGURE_GLOB))]
    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(figures):
        name = f.name if len(figures) == 1 else f"{f.stem}-{i + 1}{f.suffix}"
        shutil.copyfile(f, out / name)


def _merge(args) -> int:
    from benchmark.reporting.html import write_html
    from benchmark.reporting.report import write_reports
    from benchmark.running.merge import (
        MergeError,
        is_sweep,
        load_record,
        load_sweep,
        merge_records,
        merge_sweeps,
        missing_shards,
    )

    sweeps = [is_sweep(Path(p)) for p in args.records]
    if any(sweeps) and not all(sweeps):
        raise MergeError("Pass either run records (run.json) or sweep records (sweep.json), not both: they merge "
                         "into different reports.")
    load, merge, what = (load_sweep, merge_sweeps, "sweep") if all(sweeps) else (load_record, merge_records,
                                                                                  "leaderboard")
    records = [(p, load(Path(p))) for p in args.records]
    merged = merge(records)  # refuses before anything is written
    missing = missing_shards(records)
    if missing:
        print(f"warning: shard(s) {', '.join(missing)} missing: the {what} covers only the shards given",
              file=sys.stderr)
    out = Path(args.out)
    if all(sweeps):
        from benchmark.reporting.sweep_report import write_sweep

        written = write_sweep(merged, out)
    else:
        _copy_figures([Path(p).parent for p, _ in records], out)
        written = [*write_reports(merged, out), write_html(merged, out)]
    for p in written:
        print(p)
    return 0


def _baseline_or_compare(args) -> int:
    from benchmark.methods import all_methods, discover
    from benchmark.regression import baseline as bl
    from benchmark.reporting.report import cells_from_record
    from benchmark.running.merge import load_record

    record = load_record(Path(args.record))
    cells, checks, run = cells_from_record(record), record.get("checks", {}), record["run"]
    discover()
    registered = set(all_methods())
    if args.cmd == "baseline":
        path = Path(args.out)
        old, note = bl.previous_for_update(path, bl.identity(run))
        if note:
            print(note, file=sys.stderr)
        new = bl.record_baseline(path, old, run, cells, checks, registered=registered)
        print(f"{path}: {', '.join(f'{v} {k}' for k, v in new['history'][-1]['counts'].items())}")
        return 0
    from benchmark.pinning import check_entries
    from benchmark.regression.machine import machine_differences

    base = bl.load_baseline(Path(args.baseline))
    bl.check_identity(base, bl.identity(run), args.baseline)
    check_entries(base, Path(args.baseline))
    bl.check_same_weights(base, run, args.baseline, args.record)
    changes = bl.compare(base, cells, checks, registered=registered, samples=run.get("samples"),
                         profile=bl.run_profile(run))
    for diff in machine_differences(base.get("machine"), run.get("machine")):
        print(f"info: other machine than the baseline's: {diff}")
    out = Path(args.out) if args.out else Path(args.record).parent
    for p in bl.write_comparison(changes, out, args.baseline, base, run):
        print(p)
    for line, _ in bl.report_lines(changes):
        print(line)
    print(f"compare: {bl.summary_line(changes)}")
    return 1 if bl.fails(changes) else 0


def _parser() -> argparse.ArgumentParser:
    """The command line's parser: one subcommand each for list, build, report, merge, baseline, compare and grade."""
    from benchmark.option_table import add_command_options

    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_list = sub.add_parser("list", help="list registered methods, properties or profiles")
    p_list.add_argument("what", choices=["methods", "properties", "profiles"])
    build_about = ("build the dataset and train the three model arms (biased, control, absent; K of each with "
                   "--model-seeds K) for a profile; print the model cards")
    p_build = sub.add_parser("build", help=build_about, description=build_about[0].upper() + build_about[1:] + ".")
    add_command_options(p_build, ("profile", "arch", "seed", "data", "data-root", "cache-dir", "device", "mark",
                                  "model-seeds"),
                        help={"arch": "train a small vision transformer instead of the profile's CNN (default: the "
                                      "profile's architecture)",
                              "seed": "seed for data and training (default 0)",
                              "cache-dir": "where datasets/ and models/ are written (default: $SHORTCUT_BENCH_CACHE, "
                                           "else {root})"})
    p_rep = sub.add_parser("report", help="rebuild leaderboards from a run record without re-running")
    p_rep.add_argument("record", nargs="?", default="reports/run.json")
    p_rep.add_argument("--out", default=None, help="output folder (default: the record's folder)")
    p_merge = sub.add_parser("merge", help="combine shard run records (run.json) or sweep records (sweep.json) into one "
                                           "leaderboard (refuses mismatched shards)")
    p_merge.add_argument("records", nargs="+", help="run.json of each shard, or sweep.json of each sweep shard")
    p_merge.add_argument("--out", required=True, help="folder for the merged run.json and reports")
    p_base = sub.add_parser("baseline", help="write (or update) a regression baseline from a run record")
    p_base.add_argument("record", nargs="?", default="reports/run.json")
    p_base.add_argument("--out", default="reports/baseline.json", help="baseline path (default reports/baseline.json)")
    p_cmp = sub.add_parser("compare", help="compare a run record with a baseline; exit 1 when something regressed")
    p_cmp.add_argument("record", nargs="?", default="reports/run.json")
    p_cmp.add_argument("--baseline", default="reports/baseline.json")
    p_cmp.add_argument("--out", default=None, help="folder for compare.md/.json (default: the record's folder)")
    _grade_options(sub)
    return parser


def _grade_options(sub) -> None:
    """The ``grade`` subcommand: the options of ``pytest suites/`` without their ``--bench-`` prefix."""
    from benchmark.option_table import add_command_options

    p = sub.add_parser("grade", help="grade the grid without pytest; writes the reports pytest suites/ writes")
    add_command_options(p, ("profile", "arch", "seed", "data", "data-root", "cache-dir", "reports-dir", "device",
                            "methods"))
    p.add_argument("--properties", default=None, help="comma-separated property keys (default: every registered property)")
    add_command_options(p, ("threshold", "cell-timeout", "mark", "model-seeds", "channels-last", "fused-inference",
                            "fresh"))
    p_cache = sub.add_parser("cache", help="the result store under the cache directory: its size, or prune it")
    p_cache.add_argument("action", choices=["size", "prune"])
    p_cache.add_argument("--cache-dir", default=None, help="the cache directory (default: $SHORTCUT_BENCH_CACHE, else .)")
    p_cache.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                         help="prune only results unused for this many days (default: all)")


def _cache(args) -> int:
    """``cache``: the result store's size, or remove its entries (all, or those unused for --older-than days)."""
    import os

    from benchmark.running.store import STORE_DIR, prune, store_contents

    root = Path(args.cache_dir or os.environ.get("SHORTCUT_BENCH_CACHE") or ".")
    if args.action == "size":
        kinds = store_contents(root)
        n, size = sum(n for n, _ in kinds.values()), sum(b for _, b in kinds.values())
        parts = ", ".join(f"{k} {kind} ({b / 1e6:.2f} MB)" for kind, (k, b) in kinds.items())
        print(f"{root / STORE_DIR}: {n} entries, {size / 1e6:.1f} MB: {parts}")
        return 0
    if args.older_than is not None and args.older_than < 0:
        raise ConfigError(f"--older-than must be a number of days >= 0, got {args.older_than:g}")
    n, size = prune(root, older_than_days=args.older_than)
    print(f"{root / STORE_DIR}: removed {n} files, {size / 1e6:.1f} MB")
    return 0


def _build_cache_root(cache_dir: str | None) -> Path:
    """``build``'s cache folder, chosen as pytest's plugin chooses it: --cache-dir, else $SHORTCUT_BENCH_CACHE, else
    the current folder (checked writable; the error names whichever of the two set it)."""
    import os

    from benchmark.running.usage import check_output_dir

    env = os.environ.get("SHORTCUT_BENCH_CACHE")
    if cache_dir:
        return check_output_dir(cache_dir, "--cache-dir")
    if env:
        return check_output_dir(env, "$SHORTCUT_BENCH_CACHE")
    return check_output_dir(".", "--cache-dir")


def _build(args) -> int:
    """``build``: build the dataset and train the models of a profile, then print the world and the model cards."""
    from benchmark.profiles import resolve_profile, with_arch
    from benchmark.running.usage import check_device, check_model_seeds, check_seed
    from benchmark.session import BenchOptions, prepare

    profile, reason = resolve_profile(args.profile)
    try:
        profile = with_arch(profile, args.arch)
    except ConfigError as exc:  # the message names pytest's option; this command's is the same without "bench-"
        raise ConfigError(str(exc).replace("--bench-", "--")) from None
    check_seed(args.seed)
    model_seeds = check_model_seeds(args.model_seeds)
    from benchmark.running.sweep import parse_mark

    mark = parse_mark(args.mark, profile.image_size, "--mark")
    check_device(args.device)
    cache_root = _build_cache_root(args.cache_dir)
    print(f"profile {profile.name} ({reason})")
    bench = prepare(profile, BenchOptions(seed=args.seed, data_source=args.data, data_root=args.data_root,
                                          cache_root=cache_root, device=args.device,
                                          model_seeds=model_seeds, mark=mark))
    print(bench.world.summary())
    for name, m in bench.arm_models().items():
        print(f"{name}: {m.header_line()}")
        print(json.dumps(m.card, indent=2, sort_keys=True))
    return 0


def _report(args) -> int:
    """``report``: rebuild the leaderboards (and the HTML page) from a run record, and the other architectures'
    reports beside it (as pytest and ``grade`` do)."""
    from benchmark.reporting.html import write_html, write_sibling_reports
    from benchmark.reporting.report import write_reports
    from benchmark.running.merge import load_record

    path = Path(args.record)
    record = load_record(path)
    out = Path(args.out) if args.out else path.parent
    if out.resolve() != path.parent.resolve():
        _copy_figures([path.parent], out)
    for p in [*write_reports(record, out), write_html(record, out), *write_sibling_reports(record, out)]:
        print(p)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``shortcut-bench`` command."""
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "list":
            print(_list(args.what))
        elif args.cmd == "build":
            return _build(args)
        elif args.cmd == "report":
            return _report(args)
        elif args.cmd == "merge":
            return _merge(args)
        elif args.cmd in ("baseline", "compare"):
            return _baseline_or_compare(args)
        elif args.cmd == "cache":
            return _cache(args)
        elif args.cmd == "grade":
            # Lazy like every subcommand's imports: torch, Captum and Quantus cost 2.0 s (measured on 2 cores), which
            # list/report/merge/compare never need.
            from benchmark.running import grid

            return grid.command(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
