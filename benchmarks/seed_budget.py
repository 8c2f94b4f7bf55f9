"""Training seeds x images per seed: which split of a fixed image budget gives the narrowest honest CI (issue 31).

Usage: python benchmarks/seed_budget.py RUN_JSON [--budget-map 360] [--budget-eval 16] [--seeds 1,2,3,4,5,6]

RUN_JSON is the run.json of a run graded on three or more training seeds (``--bench-model-seeds 3``) with every
image each property can grade. From each voting cell of a real method it estimates two variance components of the
per-image skill: within a seed (image to image) and between seeds (training run to training run, what one seed
cannot show). It then predicts, for K seeds sharing the profile's image budget (K x n images cost what the one-seed
grid's budget costs; grading cost is linear in images, benchmarks/RESULTS.md), the half-width of the 95% interval
the grader would report (``stats.hierarchical_mean``: a t interval with K - 1 degrees of freedom on the seeds'
means) and the share of cells that interval decides (lies wholly on one side of the pass level). One seed's
interval covers images only: its real coverage of the recipe's effect is printed beside it.

Printed on stdout as Markdown for benchmarks/RESULTS.md. Exit status 2 on bad input (one line saying what to fix).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from benchmark.grading.properties import PROPERTIES


def components(skills: list[float | None], counts: list[int]) -> tuple[float, float, float, float]:
    """(pooled mean, within-seed variance, between-seed variance of the true means, mean images per seed)."""
    groups, start = [], 0
    for n in counts:
        g = np.array([v for v in skills[start:start + n] if v is not None], dtype=np.float64)
        start += n
        if g.size >= 2:
            groups.append(g)
    means = np.array([g.mean() for g in groups])
    within = float(np.mean([g.var(ddof=1) for g in groups]))
    n_bar = float(np.mean([g.size for g in groups]))
    # Method of moments: the seeds' means spread by the true between-seed variance plus each mean's image noise.
    between = max(0.0, float(means.var(ddof=1)) - within / n_bar)
    return float(means.mean()), within, between, n_bar


def half_width(k: int, n: int, within: float, between: float) -> float:
    """Expected half-width of the grader's interval with ``k`` seeds of ``n`` images (one seed: the images' own)."""
    if k == 1:
        return 1.96 * math.sqrt(within / n)
    return float(stats.t.ppf(0.975, k - 1)) * math.sqrt((between + within / n) / k)


def one_seed_coverage(n: int, within: float, between: float) -> float:
    """How often one seed's image-only 95% interval covers the recipe's mean skill."""
    total = math.sqrt(between + within / n)
    return float(2 * stats.norm.cdf(1.96 * math.sqrt(within / n) / total) - 1) if total > 0 else 1.0


def cell_components(record: dict, controls: set[str]) -> dict[str, list[tuple]]:
    """Per property: (method, metric, mean, within, between, images per seed) of each voting real-method cell."""
    out: dict[str, list[tuple]] = defaultdict(list)
    for c in record["cells"]:
        if c["method"] in controls or not c.get("votes", True) or not c.get("skills") or len(c.get("seed_counts") or []) < 3:
            continue
        mean, within, between, n_bar = components(c["skills"], c["seed_counts"])
        out[c["suite"]].append((c["method"], c["metric"], mean, within, between, n_bar))
    return out


def table(rows: list[tuple], budget: int, seeds: list[int], pass_level: float) -> list[str]:
    """Markdown rows: one per number of seeds sharing ``budget`` images."""
    lines = ["| seeds x images | median half-width | cells decided | one seed's real coverage (median) |",
             "|---|---|---|---|"]
    for k in seeds:
        n = max(2, -(-budget // k))
        hw = [half_width(k, n, w, b) for _, _, _, w, b, _ in rows]
        decided = sum(abs(m - pass_level) > h for (_, _, m, _, _, _), h in zip(rows, hw))
        cov = f"{np.median([one_seed_coverage(n, w, b) for *_, w, b, _ in rows]):.2f}" if k == 1 else "—"
        lines.append(f"| {k} x {n} | {np.median(hw):.3f} | {decided} of {len(rows)} | {cov} |")
    return lines


def report(record: dict, controls: set[str], budgets: dict[str, int], seeds: list[int]) -> str:
    """The study as Markdown: variance components, then the designs per property."""
    run = record.get("run") or {}
    lines = [f"Run: training seeds {run.get('model_seeds')}, git {str(run.get('git', '?'))[:10]}, "
             f"{len(record['cells'])} cells.", ""]
    for suite, rows in sorted(cell_components(record, controls).items()):
        prop = PROPERTIES[suite]
        budget = budgets["map" if prop.map_only else "eval"]
        share = np.array([b / (b + w / n) if b + w / n > 0 else 0 for *_, w, b, n in rows])
        lines += [f"#### {suite} ({len(rows)} voting cells of real methods, budget {budget} images)", "",
                  f"Between-seed share of a seed mean's variance: median {np.median(share):.2f}, "
                  f"quartiles {np.quantile(share, 0.25):.2f}-{np.quantile(share, 0.75):.2f}.", ""]
        lines += table(rows, budget, seeds, prop.pass_level) + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_json", type=Path)
    parser.add_argument("--budget-map", type=int, default=360, help="images of the map-only properties (one seed's)")
    parser.add_argument("--budget-eval", type=int, default=16, help="images of the model-calling properties")
    parser.add_argument("--seeds", default="1,2,3,4,5,6")
    args = parser.parse_args(argv)
    try:
        record = json.loads(args.run_json.read_text(encoding="utf-8"))
        seeds = [int(s) for s in args.seeds.split(",")]
    except (OSError, ValueError) as exc:
        print(f"seed_budget: cannot read {args.run_json} or --seeds: {exc}", file=sys.stderr)
        return 2
    if len((record.get("run") or {}).get("model_seeds") or []) < 3:
        print(f"seed_budget: {args.run_json} was graded on fewer than 3 training seeds; run "
              "`pytest suites/ --bench-model-seeds 3` first", file=sys.stderr)
        return 2
    from benchmark.methods import all_methods

    controls = {name for name, cls in all_methods().items() if cls.capabilities.control}
    print(report(record, controls, {"map": args.budget_map, "eval": args.budget_eval}, seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
