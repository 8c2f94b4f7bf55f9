"""The quick grid on the CNN and on the ViT, cold (training included), side by side on one machine (issue 29).

Usage: python benchmarks/arch_cost.py [--seeds 4] [--workers 2] [--methods A,B] [--out DIR]

Each architecture builds its data and models in a fresh cache (timed), then grades the whole grid (`pytest suites/
--bench-fresh`, timed). The CNN reports to OUT/reports and the ViT to OUT/reports/vit, so each report carries the
other's verdicts side by side. Printed: build, grid and total seconds per architecture, the ViT's ratio to the CNN,
each grid's method count, ERROR cells and N/A methods, and the biased models' cards. Exit 1 when a run writes no
record or the ViT grid has an ERROR cell.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
from pathlib import Path

from seed_cost import build, grid

ARCHS = ("cnn", "vit")


def _describe(record: dict) -> str:
    cells = record["cells"]
    methods = sorted({c["method"] for c in cells})
    errors = [f"{c['method']} × {c['metric']}" for c in cells if c["outcome"] == "ERROR"]
    na = sorted(m for m in methods if all(c["outcome"] == "N/A" for c in cells if c["method"] == m))
    cards = record["run"].get("models", {})
    lines = [f"  {len(methods)} methods, {len(cells)} cells, {len(methods) - len(na)} graded; ERROR cells: "
             f"{len(errors)} {errors[:5]}", f"  N/A on every cell: {', '.join(na) or 'none'}"]
    for name, card in sorted(cards.items()):
        if name.startswith("biased") or name.startswith("control"):
            lines.append(f"  {name} {card.get('arch_name')}: clean {card.get('clean_accuracy', 0):.3f}, flips "
                         f"{card.get('flip_rate', 0):.3f}, p(dog) on flips {card.get('mean_p_dog_on_flips', 0):.3f}, "
                         f"{card.get('optimiser_steps')} steps in {card.get('train_seconds')} s")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4, help="training seeds per arm (default 4, quick's default)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", default=None)
    parser.add_argument("--out", type=Path, default=None, help="where reports/ goes (default: a temporary folder)")
    parser.add_argument("--keep-caches", action="store_true",
                        help="build in OUT/cache-ARCH and keep it (e.g. to record a baseline from it)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="arch-cost-"))
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {args.seeds} seeds, -n {args.workers}", flush=True)
    times, failed = {}, False
    for arch in ARCHS:
        reports = out / "reports" / ("" if arch == "cnn" else arch)
        with tempfile.TemporaryDirectory(prefix=f"arch-cost-{arch}-") as scratch:
            cache = out / f"cache-{arch}" if args.keep_caches else Path(scratch)
            if cache.exists() and any(cache.iterdir()):
                raise SystemExit(f"{cache} is not empty: the build would not be cold")
            built = build(cache, args.seeds, None if arch == "cnn" else arch)
            wall, record = grid(cache, args.seeds, args.methods, args.workers, reports, None if arch == "cnn" else arch)
        times[arch] = (built, wall)
        print(f"{arch}: build {built:.1f} s, grid {wall:.1f} s, total {built + wall:.1f} s "
              f"(load {os.getloadavg()[0]:.2f})\n{_describe(record)}", flush=True)
        failed |= arch == "vit" and any(c["outcome"] == "ERROR" for c in record["cells"])
    (cb, cg), (vb, vg) = times["cnn"], times["vit"]
    print(f"ViT / CNN: build {vb / cb:.2f}x, grid {vg / cg:.2f}x, total {(vb + vg) / (cb + cg):.2f}x "
          f"(issue 29's target: total <= 1.5x)")
    print(f"reports: {out / 'reports'} (CNN) and {out / 'reports' / 'vit'} (ViT)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
