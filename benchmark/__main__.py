"""Command line: ``python -m benchmark list methods|properties|profiles``, ``build``, ``report``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmark.errors import BenchmarkError


def _list(what: str) -> str:
    if what == "methods":
        from benchmark.methods.listing import format_method_table

        return format_method_table()
    if what == "properties":
        from tabulate import tabulate

        from benchmark.properties import ARROW, PROPERTIES

        rows = [[p.key, p.version, m.name, ARROW[m.direction], m.threshold, ", ".join(p.beat)
                 + (" + control model" if p.false_alarm else "") + (" (informational)" if p.informational else "")]
                for p in PROPERTIES.values() for m in p.metrics]
        return tabulate(rows, headers=["suite", "version", "metric", "dir", "threshold", "must beat"])
    from tabulate import tabulate

    from benchmark.profiles import PROFILES

    rows = [[p.name, p.arch if p.arch == "cnn" else f"resnet-{p.depth}", p.image_size, p.n_train, p.epochs,
             p.method_level, p.n_eval, p.description] for p in PROFILES.values()]
    return tabulate(rows, headers=["profile", "model", "px", "train images", "epochs", "methods", "graded", "about"])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``shortcut-bench`` command."""
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_list = sub.add_parser("list", help="list registered methods, properties or profiles")
    p_list.add_argument("what", choices=["methods", "properties", "profiles"])
    p_build = sub.add_parser("build", help="build the dataset and train both models for a profile; print model cards")
    p_build.add_argument("--profile", default=None)
    p_build.add_argument("--seed", type=int, default=0)
    p_build.add_argument("--data", default="procedural")
    p_build.add_argument("--data-root", default=None)
    p_build.add_argument("--cache-dir", default=".")
    p_build.add_argument("--device", default=None)
    p_rep = sub.add_parser("report", help="rebuild leaderboards from a run record without re-running")
    p_rep.add_argument("record", nargs="?", default="reports/run.json")
    p_rep.add_argument("--out", default=None, help="output folder (default: the record's folder)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "list":
            print(_list(args.what))
        elif args.cmd == "build":
            from benchmark.profiles import resolve_profile
            from benchmark.session import BenchOptions, prepare

            profile, reason = resolve_profile(args.profile)
            print(f"profile {profile.name} ({reason})")
            bench = prepare(profile, BenchOptions(seed=args.seed, data_source=args.data, data_root=args.data_root,
                                                  cache_root=Path(args.cache_dir), device=args.device))
            print(bench.world.summary())
            for m in (bench.biased, bench.control):
                print(m.header_line())
                print(json.dumps(m.card, indent=2, sort_keys=True))
        elif args.cmd == "report":
            from benchmark.report import write_reports

            path = Path(args.record)
            if not path.exists():
                raise BenchmarkError(f"No run record at {path}: run `pytest suites/` first or pass the record's path.")
            try:
                record = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{path} is not valid JSON ({exc}); restore it from the run that wrote it.") from None
            for p in write_reports(record, Path(args.out) if args.out else path.parent):
                print(p)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
