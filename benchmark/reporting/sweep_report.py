"""The strength sweep's reports: sweep.md, sweep.png and sweep.json from a sweep result (see
:func:`benchmark.running.sweep.summarise`), and how a detection limit reads in a table."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from tabulate import tabulate

from benchmark.cache import atomic_path, atomic_write_json, atomic_write_text
from benchmark.grading.properties import LOCALISATION

# How a detection limit reads when a method's verdicts are not monotone in strength (the rule is in sweep.json).
READING = ("Verdicts need not be monotone in strength: each level has its own models, and each verdict its own CI. "
           "The limit is the weakest level at which the method passes with no FAIL at a stronger level; an "
           "INCONCLUSIVE stronger level (its CI straddles the pass level) is no evidence of a miss and does not stop "
           "it. From weak to strong, PASS, PASS, INCONCLUSIVE gives the first level; PASS, FAIL, PASS gives the "
           "strongest, since the fail makes the weak pass a likely accident; a FAIL at the strongest level leaves no "
           "limit. Where INCONCLUSIVE levels could still move the limit, it is shown with its range, from every "
           "INCONCLUSIVE level read as PASS to every one read as FAIL: \"2.5% (undecided: 1.5% to none)\" could "
           "become anything from 1.5% to no limit once those levels are decided. Two runs whose ranges overlap do "
           "not contradict each other.")


def limit_text(limits: dict[str, str | None], method: str, ranges: dict[str, list] | None = None) -> str:
    """A detection limit as a table shows it: the level, "none" (swept, never found) or "—" (not swept), and its
    range where INCONCLUSIVE levels leave it undecided."""
    text = limits.get(method) or ("none" if method in limits else "—")
    weak, strong = (ranges or {}).get(method) or (None, None)
    return text if weak == strong else f"{text} (undecided: {weak or 'none'} to {strong or 'none'})"


def level_area(result: dict, label: str | None) -> float | None:
    """The area of the sweep result's level called ``label`` (None for no such level)."""
    return next((lv["area"] for lv in result["levels"] if lv["label"] == label), None)


def render_markdown(result: dict) -> str:
    """The sweep as Markdown: the levels with their models, then each method's skill per level and detection limit."""
    levels = result["levels"]
    rows = [[lv["label"], f"{lv['footprint']:.2%}", f"{lv['opacity']:g}",
             f"{lv['flip_rate']:.1%}" if lv["flip_rate"] is not None else "—",
             "yes" if lv["learned"] else f"EXCLUDED: {lv['excluded']}"] for lv in levels]
    out = ["# Shortcut strength sweep (localisation)", "", result["rule"], "", READING, "",
           tabulate(rows, headers=["level", "footprint", "opacity", "flip rate", "included"], tablefmt="github"), ""]
    shown = [lv["label"] for lv in levels if lv["learned"]]

    def fmt(entry: dict | None) -> str:
        if not entry or entry["effect"] is None:
            return entry["verdict"] if entry else "—"
        e = entry["effect"]
        return f"{entry['verdict']} {e['mean']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]"

    limits = result["detection_limits"]
    order = sorted(result["methods"], key=lambda m: (limits[m] is None, level_area(result, limits[m]) or 1.0, m))
    ranges = result.get("detection_limit_ranges")
    rows = [[m, limit_text(limits, m, ranges), *[fmt(result["methods"][m].get(lb)) for lb in shown]] for m in order]
    out += ["Skill per level (verdict, mean [95% CI]; 0 = Random, 1 = Oracle):", "",
            tabulate(rows, headers=["method", "detection limit", *shown], tablefmt="github"), ""]
    return "\n".join(out)


def curve_figure(result: dict, path):
    """PNG: localisation skill against mark size, one line per method with its 95% CI band."""
    matplotlib.use("Agg")  # the backend is chosen when drawing, never when the module is imported

    levels = [lv for lv in result["levels"] if lv["learned"]]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    xs = [100 * lv["footprint"] for lv in levels]
    # 38 methods outrun any colour cycle: colour and line style together tell them apart.
    colours, styles = plt.get_cmap("tab20").colors, ("-", "--", ":")
    for i, (m, per) in enumerate(sorted(result["methods"].items())):
        pts = [(x, per[lv["label"]]["effect"]) for x, lv in zip(xs, levels)
               if per.get(lv["label"]) and per[lv["label"]]["effect"]]
        if not pts:
            continue
        x = [p[0] for p in pts]
        line, = ax.plot(x, [p[1]["mean"] for p in pts], marker="o", lw=1, ms=3, label=m,
                        color=colours[i % len(colours)], ls=styles[(i // len(colours)) % len(styles)])
        ax.fill_between(x, [p[1]["ci_low"] for p in pts], [p[1]["ci_high"] for p in pts], color=line.get_color(),
                        alpha=0.12, lw=0)
    ax.axhline(LOCALISATION.pass_level, color="k", ls="--", lw=0.8)
    for lv in result["levels"]:
        if not lv["learned"]:
            ax.axvline(100 * lv["footprint"], color="grey", ls=":", lw=0.8)
    ax.set_xlabel("watermark footprint (% of the image)")
    ax.set_ylabel("localisation skill (0 = Random, 1 = Oracle)")
    ax.set_title("Localisation skill vs watermark size\n(black dashed: pass level; grey dotted: excluded level)",
                 fontsize=9)
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")  # keeps the outside legend whole
    plt.close(fig)
    return path


SWEEP_FILES = ("sweep.json", "sweep.md", "sweep.png")


def write_sweep(result: dict, out_dir) -> list:
    """Write sweep.json, sweep.md and sweep.png atomically; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out / name for name in SWEEP_FILES)
    atomic_write_json(json_path, result)
    atomic_write_text(md_path, render_markdown(result))
    curve_figure(result, png_path)
    return [json_path, md_path, png_path]
