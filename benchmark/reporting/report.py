"""Leaderboards (Markdown, CSV, JSON) and run records built from graded cells."""

from __future__ import annotations

import json
import platform
import subprocess
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from benchmark.cache import atomic_write_json, atomic_write_text
from benchmark.grading.properties import ARROW, FALSE_ALARMS, PASS_LEVEL, PROPERTIES, MetricSpec
from benchmark.grading.seed_stability import stability
from benchmark.grading.verdict import FAIL, INCONCLUSIVE, NA, PASS, Cell, cell_id
from benchmark.reporting.architectures import arch_label, compare, markdown_lines, sibling_records
from benchmark.reporting.heatmap import heatmap, write_png
from benchmark.reporting.ranking import (
    RANKING,
    detection_areas,
    discrimination,
    effect_text,
    overall_rows,
    summarise,
    verdict_counts,
)
from benchmark.reporting.redundancy import (
    EQUAL,
    RANK_CORRELATION,
    SAME_IMAGES,
    SAME_SCORE,
    SAME_SHARE,
    identical_methods,
    metric_pairs,
)
from benchmark.reporting.sweep_report import limit_text

PACKAGES = ("torch", "torchvision", "captum", "quantus", "zennit", "numpy", "pandas", "pytest", "shortcut-bench")


def git_hash(cwd: Path | None = None) -> str:
    """Current commit (with '-dirty' when the tree has changes), or 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (default: the packages that decide the scores), and Python's."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def cells_frame(cells: list[Cell], stab: dict | None = None) -> pd.DataFrame:
    """One row per cell, sorted by suite, metric, method (deterministic whatever the run order); with ``stab`` (the
    record's stability), the property's seed stability on each of its cells' rows."""
    rows = []
    for c in cells:
        s = c.score or {}
        st = (stab or {}).get(c.suite, {}).get(c.method, {})
        rows.append({
            "suite": c.suite, "suite_version": c.suite_version, "metric": c.metric, "direction": ARROW[c.direction],
            "method": c.method, "outcome": c.outcome, "mean": s.get("mean"), "ci_low": s.get("ci_low"),
            "ci_high": s.get("ci_high"), "n": s.get("n"), "threshold": c.threshold, "standard": c.standard,
            "skill": (c.skill or {}).get("mean"), "skill_low": (c.skill or {}).get("ci_low"),
            "skill_high": (c.skill or {}).get("ci_high"),
            "beats": ";".join(sorted(k for k, v in c.comparisons.items() if v["beaten"])),
            "beaten_by": ";".join(sorted(k for k, v in c.comparisons.items() if v.get("lost"))),
            "informative": c.informative, "seed_outcomes": ";".join(c.seed_outcomes),
            "loso_outcomes": ";".join(c.loso_outcomes), "seeds": st.get("seeds"), "seeds_pass": st.get("seeds_pass"),
            "loso_agree": st.get("loso_agree"), "message": c.message,
        })
    cols = ["suite", "suite_version", "metric", "direction", "method", "outcome", "mean", "ci_low", "ci_high", "n",
            "threshold", "standard", "skill", "skill_low", "skill_high", "beats", "beaten_by", "informative",
            "seed_outcomes", "loso_outcomes", "seeds", "seeds_pass", "loso_agree", "message"]
    return pd.DataFrame(rows, columns=cols).sort_values(["suite", "metric", "method"], kind="stable").reset_index(drop=True)


def metric_header(metric: MetricSpec, cells: list[Cell], informational: bool) -> str:
    """'AUC ↑ (pass 0.742)': the metric, its direction, and where its pass level (or fixed threshold) fell this run."""
    line = "ref" if informational else "thr" if metric.threshold is not None else "pass"
    at = metric.threshold if metric.threshold is not None else next(
        (c.threshold for c in sorted(cells, key=lambda c: c.method) if c.threshold is not None), None)
    return f"{metric.name} {ARROW[metric.direction]} ({line} {'—' if at is None else f'{at:.3g}'})"


def _cell_text(c: Cell, survivors: set) -> str:
    if c.outcome == NA:
        return "n/a"
    if c.score is None:
        return c.outcome
    s = c.score
    flag = "" if c.informative is not False else " (uninformative)"
    if c.outcome == PASS and c.decides and cell_id(c) not in survivors:
        flag += " (not after BH)"
    return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] {c.outcome}{flag}"


ARMS_NOTE = ("Arms: each metric's mean on the biased model / the control model (mark present on both classes "
             "alike: no label information) / the absent model (never saw a mark). A method that scores the control "
             "or absent arm like the biased one finds the mark because it is salient, not because the model uses it.")


def arms_rows(cells: list[Cell], suite: str, order: list[str]) -> tuple[list[str], list[list[str]]]:
    """(metric names, rows of [method, 'biased / control / absent' per metric]) for a property with false alarms."""
    prop = PROPERTIES[suite]
    by = {(c.method, c.metric): c for c in cells if c.suite == suite}
    metrics = [m.name for m in prop.metrics if not m.no_vote and any(k[1] == m.name for k in by)]

    def text(c: Cell | None) -> str:
        if c is None or c.score is None:
            return "—" if c is None else c.outcome
        arms = [c.comparisons.get(name, {}).get("control", {}).get("mean") for name in FALSE_ALARMS.values()]
        return " / ".join(f"{v:.2f}" if v is not None else "—" for v in [c.score["mean"], *arms])

    return metrics, [[m, *(text(by.get((m, name))) for name in metrics)] for m in order]


def fdr_line(suite: str, summary: dict) -> str:
    """How the property's Benjamini-Hochberg step went, in one sentence."""
    f = summary["fdr"].get(suite)
    if not f:
        return "No deciding cell with a p-value: nothing to adjust."
    lost = f["raw_pass"] - f["survive"]
    return (f"Multiplicity: Benjamini–Hochberg at false discovery rate {f['q']:g} over the property's {f['family']} "
            f"deciding cells; {f['survive']} of {f['raw_pass']} passing cells survive"
            + (f" ({lost} marked 'not after BH' count as neither pass nor fail in the verdicts)." if lost else "."))


def seeds_line(run: dict) -> str:
    """What the run's CIs cover: the images of one training seed, or several seeds and then their images."""
    seeds = run.get("model_seeds") or [run.get("seed", 0)]
    if len(seeds) == 1:
        return (f"Every model was trained from one seed ({seeds[0]}): the CIs cover the graded images, not the "
                "variation between training runs (--bench-model-seeds K trains K seeds of every model). Every "
                "verdict rests on that one training run: the property tables mark it '(one seed)'.")
    return (f"Every model arm was trained from {len(seeds)} seeds ({', '.join(map(str, seeds))}), and each seed's "
            "biased model flips its own cats: every cell pools the seeds' images, and its CIs and p-values come from a "
            f"t interval on the seeds' means ({len(seeds) - 1} degrees of freedom), so they cover the variation between "
            "training runs as well as between images. The seed level rests on "
            f"{len(seeds)} values, which makes the intervals wide. " + STABILITY)


STABILITY = (
    "Seed stability: every cell is judged again on each training seed alone (the bootstrap over that seed's images) "
    "and leaving each seed out (the t interval on the others' means), and the property's majority rule is applied to "
    "those outcomes, without the Benjamini–Hochberg step (a subset's p-values are not kept; the full run's verdict it "
    "is compared with is taken without it too). 'seeds passing alone' counts the seeds whose own verdict is PASS; "
    "'LOSO agreement' counts the leave-one-seed-out verdicts equal to the full run's. A PASS or FAIL that some "
    "leave-one-seed-out verdict does not repeat is marked '(rests on one seed)'."
)


def stability_mark(verdict: str, entry: dict | None) -> str:
    """' (one seed)' for a verdict of a one-seed run; ' (rests on one seed)' for a PASS or FAIL that some
    leave-one-seed-out verdict does not repeat (an INCONCLUSIVE verdict rests on nothing)."""
    if not entry:
        return ""
    if entry.get("seeds") == 1:
        return " (one seed)"
    agree = entry.get("loso_agree")
    return " (rests on one seed)" if verdict in (PASS, FAIL) and agree is not None and agree < entry["seeds"] else ""


def stability_columns(entry: dict | None) -> list[str]:
    """['k/K', 'm/K']: seeds passing alone and leave-one-seed-out agreement ('—' where not recorded)."""
    if not entry or "seeds_pass" not in entry:
        return ["—", "—"]
    return [f"{entry['seeds_pass']}/{entry['seeds']}", f"{entry['loso_agree']}/{entry['seeds']}"]


def _property_section(s: str, by: dict, cells: list[Cell], summary: dict, stab: dict | None = None) -> list[str]:
    """One property's Markdown section: its description, controls, per-method table (with the seed stability from
    ``stab``, the record's stability of this property), FDR line and arms table."""
    prop = PROPERTIES[s]
    metrics = [m for m in prop.metrics if any(k[1] == m.name for k in by)]
    controls_label = "Compared with" if prop.informational else "Controls to beat"
    lines = ["", f"## {prop.name} (`{s}` v{prop.version})", "", prop.description, "",
             f"Skill anchors: {prop.negative} = 0 (lacks the property), {prop.positive} = 1 (has it); "
             f"{'reference' if prop.informational else 'pass'} level {prop.pass_level:g}. "
             f"{controls_label}: {', '.join(prop.beat)}" + ("; and the same method on the control and absent "
                                                          "models (false alarms)" if prop.false_alarm else "")
             + ".", ""]
    if prop.informational:
        lines += ["**Informational**: cells show scores (INFO) against a reference line, never PASS or FAIL, "
                  "and this property does not count in the overall ranking.", ""]
    stab = stab or {}
    multi = any(e.get("seeds", 1) > 1 for e in stab.values())
    headers = ["rank", "method", "verdict", "effect [95% CI]"] + (
        ["seeds passing alone", "LOSO agreement"] if multi else []) + [
        metric_header(m, [c for (_, name), c in by.items() if name == m.name], prop.informational)
        for m in metrics]
    rows = [[summary["rank_labels"][s][m], m, summary["verdicts"][s][m] + stability_mark(summary["verdicts"][s][m], stab.get(m)),
             effect_text(summary["effects"][s][m])] + (stability_columns(stab.get(m)) if multi else [])
            + [_cell_text(by[(m, mt.name)], summary["survivors"]) if (m, mt.name) in by else "missing"
               for mt in metrics]
            for m in summary["order"][s]]
    lines.append(tabulate(rows, headers=headers, tablefmt="github"))
    lines += ["", _discrimination_line(s, summary)] + ([] if prop.informational else ["", fdr_line(s, summary)])
    if prop.false_alarm:
        arm_metrics, arm_rows = arms_rows(cells, s, summary["order"][s])
        lines += ["", ARMS_NOTE, "", tabulate(arm_rows, headers=["method", *arm_metrics], tablefmt="github")]
    return lines


VERDICTS = (
    "A metric cell PASSes when the studentised-bootstrap 95% CI of its skill lies above the property's pass level "
    f"({PASS_LEVEL:g}: skill 0 is the property's negative control, 1 its positive control, both constructed maps "
    "measured in this run on the same images), and the 95% CI of its paired difference with every control listed lies "
    "on the better side of zero (the same standard for both; a difference with no spread counts only by the exact sign "
    "test). It FAILs when its skill CI lies wholly below the pass level, or a control beats it (the difference's CI "
    "lies wholly on the worse side). Otherwise it is INCONCLUSIVE: a CI straddles, and this run cannot tell; its "
    "message says which part and how to decide it (more images, more training seeds). A fixed --bench-threshold "
    "replaces the pass level for its metric. A method passes a property when a strict majority of its informative "
    "voting metric cells pass, counting only passes that survive the Benjamini–Hochberg step (false discovery rate "
    "0.05) over the property's deciding cells in this run; it fails when a strict majority fail; otherwise it is "
    "INCONCLUSIVE. The p-value of a cell is the largest of its parts' (pass level and every control: an "
    "intersection-union test). Cells show the score's mean [95% CI]."
)


def render_markdown(record: dict, cells: list[Cell], sweep: dict | None = None,
                    archs: list[dict] | None = None) -> str:
    """The leaderboard as Markdown: overall ranking (with the detection limit when a ``sweep`` result is given), one
    table per property, the comparison with each of ``archs`` (other architectures' runs), metric validity."""
    summary = summarise(cells, detection_areas(sweep))
    run = record.get("run", {})
    lines = [
        "# shortcut-bench leaderboard", "",
        f"Profile `{run.get('profile', {}).get('name', '?')}`, architecture `{arch_label(run)}`, "
        f"seed {run.get('seed', '?')}, "
        f"git `{run.get('git', '?')}`, device {run.get('device', '?')}.", "",
        VERDICTS, "", seeds_line(run), "", RANKING, "",
        "## Overall", "",
    ]
    suites = summary["suites"]
    rows = overall_rows(summary)
    extra = []
    if sweep is not None:
        limits = sweep.get("detection_limits") or {}
        rows = [[*r, limit_text(limits, r[1], sweep.get("detection_limit_ranges"))] for r in rows]
        extra = ["detection limit (sweep)"]
    lines.append(tabulate(rows, headers=["rank", "method", "localisation effect [95% CI]", "properties passed"]
                          + [PROPERTIES[s].name for s in suites] + extra, tablefmt="github"))
    by = defaultdict(dict)
    for c in cells:
        by[c.suite][(c.method, c.metric)] = c
    stab = stability(cells)  # from the cells, never the record's: a merged record's is one shard's
    for s in suites:
        lines += _property_section(s, by[s], cells, summary, stab.get(s))
    lines += _redundancy_lines(cells)
    for cmp in archs or []:
        lines += markdown_lines(cmp)
    lines += ["", "## Metric validity", "",
              "Each metric must separate the controls as it should in this run; an uninformative metric does "
              "not decide verdicts.", ""]
    lines.append(tabulate(validity_rows(cells), headers=["property", "metric", "informative", "evidence"],
                          tablefmt="github"))
    return "\n".join(lines) + "\n"


def _discrimination_line(suite: str, summary: dict) -> str:
    if PROPERTIES[suite].informational:
        return "Informational: no method passes or fails."
    passed, total = discrimination(suite, summary)
    undecided = verdict_counts(suite, summary).get(INCONCLUSIVE, 0)
    # Non-discriminating: every real method on one side. An INCONCLUSIVE method may yet fall on either.
    flag = " **Non-discriminating on this world**: it passes or fails every real method." \
        if total and (passed == total or passed == undecided == 0) else ""
    inconclusive = f", {undecided} inconclusive" if undecided else ""
    return f"{passed} of {total} real methods (controls excluded) pass{inconclusive}.{flag}"


def _redundancy_lines(cells: list[Cell]) -> list[str]:
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
    lines += ["", f"Methods whose per-image scores agree within {SAME_SCORE:g} (on {SAME_IMAGES:.0%} of the images) on "
                  f"at least {SAME_SHARE:.0%} of the metrics both were graded on (very likely the same maps on this "
                  "model):", ""]
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
    # Per property and method: {"seeds": K, "seeds_pass": k, "loso_agree": m}, or {"seeds": 1} (seed_stability).
    record["stability"] = stability(ordered)
    if checks:
        record["checks"] = dict(sorted(checks.items()))
    return record


def _cell_dict(c: Cell) -> dict:
    return json.loads(c.to_json())


def cells_from_record(record: dict) -> list[Cell]:
    """Cells stored in a run record."""
    return [Cell(**d) for d in record["cells"]]


def read_sweep(out_dir: Path | None) -> dict | None:
    """The strength sweep's result (sweep.json) in ``out_dir``, or None when there is none or it is unreadable."""
    path = None if out_dir is None else Path(out_dir) / "sweep.json"
    if path is None or not path.is_file():
        return None
    try:
        sweep = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return sweep if isinstance(sweep, dict) and isinstance(sweep.get("detection_limits"), dict) else None


def write_reports(record: dict, out_dir: Path) -> list[Path]:
    """Write leaderboard.md/.csv/.json and run.json atomically; return the paths written."""
    out_dir = Path(out_dir)
    cells = cells_from_record(record)
    # From the cells: a merged record carries one shard's, a record written before it none.
    stab = record["stability"] = stability(cells)
    sweep = read_sweep(out_dir)
    summary = summarise(cells, detection_areas(sweep))
    archs = [compare(record, other) for _, other in sibling_records(out_dir, record)]
    df = cells_frame(cells, stab)
    paths = {name: out_dir / name for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "run.json")}
    atomic_write_text(paths["leaderboard.md"], render_markdown(record, cells, sweep, archs))
    atomic_write_text(paths["leaderboard.csv"], df.to_csv(index=False, float_format="%.6f"))
    atomic_write_json(paths["leaderboard.json"], {
        "profile": record["run"].get("profile", {}).get("name"), "seed": record["run"].get("seed"),
        "overall": summary["overall"], "verdicts": summary["verdicts"], "stability": stab,
        **({"architectures": archs} if archs else {}),
        # N/A and ERROR cells have no score: null in JSON, never the non-standard NaN.
        "cells": df.drop(columns=["message"]).astype(object).where(df.notna(), None).to_dict(orient="records"),
    })
    atomic_write_json(paths["run.json"], record)
    return [*paths.values(), write_png(heatmap(cells, summary), out_dir / "heatmap.png")]
