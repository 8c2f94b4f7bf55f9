"""Leaderboards (Markdown, CSV, JSON) and run records built from graded cells."""

from __future__ import annotations

import platform
import subprocess
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from benchmark.cache import atomic_write_json, atomic_write_text
from benchmark.properties import ARROW, HIGHER, PROPERTIES
from benchmark.verdict import ERROR, FAIL, INFO, NA, PASS, Cell, property_verdict

PACKAGES = ("torch", "torchvision", "captum", "quantus", "zennit", "numpy", "pandas", "pytest", "shortcut-bench")
VERDICT_ORDER = {PASS: 0, FAIL: 1, "UNDECIDED": 2, INFO: 2, ERROR: 3, NA: 4}


def git_hash(cwd: Path | None = None) -> str:
    """Current commit (with '-dirty' when the tree has changes), or 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide the scores."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def cells_frame(cells: list[Cell]) -> pd.DataFrame:
    """One row per cell, sorted by suite, metric, method (deterministic whatever the run order)."""
    rows = []
    for c in cells:
        s = c.score or {}
        rows.append({
            "suite": c.suite, "suite_version": c.suite_version, "metric": c.metric, "direction": ARROW[c.direction],
            "method": c.method, "outcome": c.outcome, "mean": s.get("mean"), "ci_low": s.get("ci_low"),
            "ci_high": s.get("ci_high"), "n": s.get("n"), "threshold": c.threshold,
            "beats": ";".join(sorted(k for k, v in c.comparisons.items() if v["beaten"])),
            "informative": c.informative, "message": c.message,
        })
    cols = ["suite", "suite_version", "metric", "direction", "method", "outcome", "mean", "ci_low", "ci_high", "n",
            "threshold", "beats", "informative", "message"]
    return pd.DataFrame(rows, columns=cols).sort_values(["suite", "metric", "method"], kind="stable").reset_index(drop=True)


def summarise(cells: list[Cell]) -> dict:
    """Per-property verdicts and ranks, and the overall ranking of methods."""
    by = defaultdict(list)
    for c in cells:
        by[(c.suite, c.method)].append(c)
    methods = sorted({c.method for c in cells})
    suites = [k for k in PROPERTIES if any(c.suite == k for c in cells)]
    verdicts = {s: {m: property_verdict(by[(s, m)]) for m in methods if (s, m) in by} for s in suites}
    ranks = {}
    for s in suites:
        def key(m, s=s):
            cs = [c for c in by[(s, m)] if c.decides]
            passed = sum(c.outcome == PASS for c in cs)
            # Nothing passes an informational property: order it by its first declared metric, best first.
            first = next((c for mt in PROPERTIES[s].metrics for c in cs if c.metric == mt.name and c.score), None)
            best = 0.0 if first is None or not PROPERTIES[s].informational else \
                -first.score["mean"] if first.direction == HIGHER else first.score["mean"]
            return (VERDICT_ORDER.get(verdicts[s][m], 9), -passed, best, m)
        ranks[s] = {m: i + 1 for i, m in enumerate(sorted(verdicts[s], key=key))}
    overall = []
    for m in methods:
        # Informational properties (complexity) show their scores but never rank a method.
        applicable = [s for s in suites if verdicts[s].get(m, NA) != NA and not PROPERTIES[s].informational]
        passed = sum(verdicts[s].get(m) == PASS for s in suites)
        errors = sum(verdicts[s].get(m) == ERROR for s in suites)
        mean_rank = sum(ranks[s][m] for s in applicable) / len(applicable) if applicable else float("inf")
        overall.append({"method": m, "passed": passed, "applicable": len(applicable), "errors": errors,
                        "mean_rank": round(mean_rank, 3), **{s: verdicts[s].get(m, NA) for s in suites}})
    overall.sort(key=lambda r: (-r["passed"], r["errors"], r["mean_rank"], r["method"]))
    for i, r in enumerate(overall):
        r["rank"] = i + 1
    return {"suites": suites, "verdicts": verdicts, "ranks": ranks, "overall": overall}


def overall_rows(summary: dict) -> list[list]:
    """Rows (rank, method, passed/applicable, verdict per suite) of the overall ranking."""
    return [[r["rank"], r["method"], f"{r['passed']}/{r['applicable']}"] + [r[s] for s in summary["suites"]]
            for r in summary["overall"]]


def _cell_text(c: Cell) -> str:
    if c.outcome == NA:
        return "n/a"
    if c.score is None:
        return c.outcome
    s = c.score
    flag = "" if c.informative is not False else " (uninformative)"
    return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] {c.outcome}{flag}"


def render_markdown(record: dict, cells: list[Cell]) -> str:
    """The leaderboard as Markdown: overall ranking, one table per property, metric validity."""
    summary = summarise(cells)
    run = record.get("run", {})
    lines = [
        "# shortcut-bench leaderboard", "",
        f"Profile `{run.get('profile', {}).get('name', '?')}`, seed {run.get('seed', '?')}, "
        f"git `{run.get('git', '?')}`, device {run.get('device', '?')}.", "",
        "A method passes a property when a strict majority of its informative voting metrics pass; a metric cell "
        "passes when its studentised-bootstrap 95% CI lies on the passing side of the threshold and the 95% CI of its paired "
        "difference with every control listed lies on the better side of zero (the same standard for both; a "
        "difference with no spread counts only by the exact sign test). Cells show mean [95% CI].", "",
        "## Overall", "",
    ]
    suites = summary["suites"]
    rows = overall_rows(summary)
    lines.append(tabulate(rows, headers=["rank", "method", "properties passed"] + [PROPERTIES[s].name for s in suites],
                          tablefmt="github"))
    by = defaultdict(dict)
    for c in cells:
        by[c.suite][(c.method, c.metric)] = c
    for s in suites:
        prop = PROPERTIES[s]
        metrics = [m for m in prop.metrics if any(k[1] == m.name for k in by[s])]
        controls_label = "Compared with" if prop.informational else "Controls to beat"
        lines += ["", f"## {prop.name} (`{s}` v{prop.version})", "", prop.description, "",
                  f"{controls_label}: {', '.join(prop.beat)}" + ("; and the same method on the control model "
                                                                 "(false alarm)" if prop.false_alarm else "") + ".", ""]
        if prop.informational:
            lines += ["**Informational**: cells show scores (INFO) against a reference line, never PASS or FAIL, "
                      "and this property does not count in the overall ranking.", ""]
        line = "ref" if prop.informational else "thr"
        headers = ["rank", "method", "verdict"] + [f"{m.name} {ARROW[m.direction]} ({line} {m.threshold:g})" for m in metrics]
        ranked = sorted(summary["verdicts"][s], key=lambda m: summary["ranks"][s][m])
        rows = [[summary["ranks"][s][m], m, summary["verdicts"][s][m]]
                + [_cell_text(by[s][(m, mt.name)]) if (m, mt.name) in by[s] else "missing" for mt in metrics]
                for m in ranked]
        lines.append(tabulate(rows, headers=headers, tablefmt="github"))
        lines += ["", _discrimination_line(s, summary)]
    lines += _redundancy_lines(cells)
    lines += ["", "## Metric validity", "",
              "Each metric must separate the controls as it should in this run; an uninformative metric does "
              "not decide verdicts.", ""]
    lines.append(tabulate(validity_rows(cells), headers=["property", "metric", "informative", "evidence"],
                          tablefmt="github"))
    return "\n".join(lines) + "\n"


def _is_control(method: str) -> bool:
    from benchmark.methods import all_methods, discover

    discover()
    cls = all_methods().get(method)
    return bool(cls is not None and cls.capabilities.control)


def discrimination(suite: str, summary: dict) -> tuple[int, int]:
    """(real methods that pass, real methods with a verdict) on one property; controls are not counted."""
    verdicts = {m: v for m, v in summary["verdicts"][suite].items() if v not in (NA, "UNDECIDED") and not _is_control(m)}
    return sum(v == PASS for v in verdicts.values()), len(verdicts)


def _discrimination_line(suite: str, summary: dict) -> str:
    if PROPERTIES[suite].informational:
        return "Informational: no method passes or fails."
    passed, total = discrimination(suite, summary)
    flag = " **Non-discriminating on this world**: it passes or fails every real method." \
        if total and passed in (0, total) else ""
    return f"{passed} of {total} real methods (controls excluded) pass.{flag}"


def _redundancy_lines(cells: list[Cell]) -> list[str]:
    from benchmark.redundancy import EQUAL, RANK_CORRELATION, SAME_SCORE, SAME_SHARE, identical_methods, metric_pairs

    pairs = metric_pairs(cells)
    lines = ["", "## Redundancy", "",
             f"Pairs of voting metrics in a property whose per-method means (signed so that higher is better) rank "
             f"alike (Spearman ≥ {RANK_CORRELATION}) or are equal within {EQUAL:g} for most methods measure one "
             "thing twice; they are flagged.", ""]
    if pairs:
        lines.append(tabulate([[p["property"], p["a"], p["b"], p["n_methods"],
                                "—" if p["spearman"] != p["spearman"] else f"{p['spearman']:.3f}",
                                p["equal_methods"], "REDUNDANT" if p["redundant"] else ""] for p in pairs],
                              headers=["property", "metric", "metric", "methods", "Spearman", "equal", "flag"],
                              tablefmt="github"))
    same = identical_methods(cells)
    lines += ["", f"Methods whose per-image scores agree within {SAME_SCORE:g} on at least {SAME_SHARE:.0%} of the "
                  "metrics both were graded on (very likely the same maps on this model):", ""]
    lines += [f"- {p['a']} ≡ {p['b']} (equal on {p['agree']} of {p['cells']} metrics)" for p in same] or ["- none"]
    return lines


def validity_rows(cells: list[Cell]) -> list[tuple[str, str, str, str]]:
    """(property, metric, yes/NO, evidence): one row per metric, in suite order, for the Markdown and HTML reports.

    Validity is judged per metric, so any of its cells carries the verdict; the first by method is shown.
    """
    seen: dict[tuple[str, str], Cell] = {}
    for c in sorted(cells, key=lambda c: (c.suite, c.metric, c.method)):
        if c.informative is not None:
            seen.setdefault((c.suite, c.metric), c)
    order = {k: i for i, k in enumerate(PROPERTIES)}
    keys = sorted(seen, key=lambda k: (order.get(k[0], len(order)), k))
    return [(seen[k].property, seen[k].metric, "yes" if seen[k].informative else "NO", seen[k].validity_reason)
            for k in keys]


def build_record(cells: list[Cell], run: dict, checks: dict[str, str] | None = None) -> dict:
    """The run record: everything needed to rebuild every report and to reproduce the run.

    ``checks``: outcomes of the tests that grade no cell (the method contract), by node id.
    """
    ordered = sorted(cells, key=lambda c: (c.suite, c.metric, c.method))
    record = {"schema": 1, "run": run, "cells": [_cell_dict(c) for c in ordered]}
    if checks:
        record["checks"] = dict(sorted(checks.items()))
    return record


def _cell_dict(c: Cell) -> dict:
    import json

    return json.loads(c.to_json())


def cells_from_record(record: dict) -> list[Cell]:
    """Cells stored in a run record."""
    return [Cell(**d) for d in record["cells"]]


def write_reports(record: dict, out_dir: Path) -> list[Path]:
    """Write leaderboard.md/.csv/.json and run.json atomically; return the paths written."""
    out_dir = Path(out_dir)
    cells = cells_from_record(record)
    summary = summarise(cells)
    df = cells_frame(cells)
    paths = {name: out_dir / name for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "run.json")}
    atomic_write_text(paths["leaderboard.md"], render_markdown(record, cells))
    atomic_write_text(paths["leaderboard.csv"], df.to_csv(index=False, float_format="%.6f"))
    atomic_write_json(paths["leaderboard.json"], {
        "profile": record["run"].get("profile", {}).get("name"), "seed": record["run"].get("seed"),
        "overall": summary["overall"], "verdicts": summary["verdicts"],
        # N/A and ERROR cells have no score: null in JSON, never the non-standard NaN.
        "cells": df.drop(columns=["message"]).astype(object).where(df.notna(), None).to_dict(orient="records"),
    })
    atomic_write_json(paths["run.json"], record)
    return list(paths.values())
