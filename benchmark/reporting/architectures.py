"""The same world graded on two architectures (a CNN in reports/, the ViT in reports/vit/): verdicts side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from tabulate import tabulate

from benchmark.grading.properties import PROPERTIES
from benchmark.grading.verdict import NA, Cell
from benchmark.reporting.ranking import RANKED_BY, is_control, summarise

ARCH_FOLDERS = ("cnn", "resnet", "vit")  # reports/<arch>/ holds a run on an architecture not the profile's own


def arch_label(run: dict) -> str:
    """The graded architecture's name from a run record, e.g. 'SmallCNN-16' or 'ViT-4x64'."""
    card = (run.get("models") or {}).get("biased") or {}  # the run record's model cards, by arm
    return card.get("arch_name") or str((run.get("profile") or {}).get("arch", "?"))


def _world(run: dict) -> tuple:
    p = run.get("profile") or {}
    return p.get("name"), run.get("seed"), (run.get("data") or {}).get("key"), tuple(run.get("model_seeds") or [])


def sibling_records(out_dir: Path, record: dict) -> list[tuple[Path, dict]]:
    """Run records beside ``out_dir`` (its parent's, or its arch subfolders') of the same world on another
    architecture: same profile, seed, data and training seeds."""
    out_dir = Path(out_dir)
    run = record.get("run", {})
    arch = (run.get("profile") or {}).get("arch")
    candidates = [out_dir.parent / "run.json", *(out_dir / a / "run.json" for a in ARCH_FOLDERS)]
    found = []
    for path in candidates:
        if not path.is_file() or path.resolve() == (out_dir / "run.json").resolve():
            continue
        try:
            other = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a half-written or foreign file is not a comparison; the run's own reports still stand
        orun = other.get("run", {}) if isinstance(other, dict) else {}
        if (orun.get("profile") or {}).get("arch") not in (None, arch) and _world(orun) == _world(run):
            found.append((path, other))
    return found


def compare(record: dict, other: dict) -> dict:
    """Per-property verdicts of both runs' real methods, the methods whose verdicts differ, and the Spearman rank
    correlation of their localisation effects over the methods with an effect on both."""
    a, b = (summarise([Cell(**d) for d in r["cells"]]) for r in (record, other))
    suites = [s for s in PROPERTIES if s in a["verdicts"] and s in b["verdicts"]]
    methods = sorted(m for m in {r["method"] for r in a["overall"]} | {r["method"] for r in b["overall"]}
                     if not is_control(m))
    rows, changed = [], []
    for m in methods:
        va = {s: a["verdicts"][s].get(m, NA) for s in suites}
        vb = {s: b["verdicts"][s].get(m, NA) for s in suites}
        rows.append({"method": m, "a": va, "b": vb})
        changed += [{"method": m, "property": s, "a": va[s], "b": vb[s]} for s in suites if va[s] != vb[s]]
    rho, n_ranked = rank_correlation(a["effects"].get(RANKED_BY, {}), b["effects"].get(RANKED_BY, {}), methods)
    return {"a": arch_label(record.get("run", {})), "b": arch_label(other.get("run", {})), "suites": suites,
            "rows": rows, "changed": changed, "spearman": rho, "n_ranked": n_ranked}


def rank_correlation(ea: dict, eb: dict, methods: list[str]) -> tuple[float | None, int]:
    """Spearman's rho of two runs' effects (``{"mean": ...}`` per method) over the ``methods`` with one on both, and
    how many those are; None when fewer than 3 or either side is constant (rho is undefined)."""
    both = [m for m in methods if (ea.get(m) or {}).get("mean") is not None
            and (eb.get(m) or {}).get("mean") is not None]
    if len(both) < 3:
        return None, len(both)
    x = np.array([ea[m]["mean"] for m in both])
    y = np.array([eb[m]["mean"] for m in both])
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, len(both)
    return float(spearmanr(x, y).statistic), len(both)


def summary_line(cmp: dict) -> str:
    """One sentence: the rank correlation and how many verdicts differ."""
    rho = "undefined (fewer than 3 methods with a localisation effect on both)" if cmp["spearman"] is None \
        else f"{cmp['spearman']:.2f} over {cmp['n_ranked']} real methods with a localisation effect on both"
    n_methods = len({c["method"] for c in cmp["changed"]})
    return (f"{cmp['a']} against {cmp['b']}: Spearman rank correlation of the localisation effects {rho}; "
            f"{len(cmp['changed'])} property verdicts differ, in {n_methods} methods (N/A where a method does not "
            f"apply to one architecture).")


def markdown_lines(cmp: dict) -> list[str]:
    """The leaderboard's architecture section: the summary line and every real method's verdicts on both."""
    names = [PROPERTIES[s].name for s in cmp["suites"]]
    rows = [[r["method"], *(f"{r['a'][s]} / {r['b'][s]}" + (" ≠" if r["a"][s] != r["b"][s] else "")
                            for s in cmp["suites"])] for r in cmp["rows"]]
    return ["", "## Architectures", "", summary_line(cmp), "",
            f"Each cell: verdict on {cmp['a']} / on {cmp['b']}; ≠ marks a change.", "",
            tabulate(rows, headers=["method", *names], tablefmt="github")]
