"""The method × metric heatmap of control-anchored skill with verdict marks: the report's first screen and a PNG."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.colors import to_rgb

from benchmark.cache import atomic_path
from benchmark.grading.properties import PROPERTIES
from benchmark.grading.verdict import COLLAPSED, ERROR, FAIL, INCONCLUSIVE, INFO, NA, PASS, Cell, cell_id

# One character per outcome, so the verdict reads without colour (a raw pass that did not survive the
# Benjamini-Hochberg step is "(✓)": it counts as neither pass nor fail in the property's verdict).
MARKS = {PASS: "✓", FAIL: "✗", INCONCLUSIVE: "?", ERROR: "!", NA: "n/a", INFO: "i", COLLAPSED: "∅"}
LEGEND = ("Colour: the cell's skill (0 = the property's negative control, 1 = its positive control, measured in this "
          "run); marks: ✓ pass, (✓) raw pass not surviving Benjamini-Hochberg, ✗ fail, ? inconclusive (a CI "
          "straddles: this run cannot tell), ! error, ∅ collapsed, i informational or not voting, n/a not applicable; "
          "a struck-through column is a metric that could not tell its controls apart in this run.")


@dataclass(frozen=True)
class Tile:
    """One heatmap cell: its skill (None when it has none), its mark and the cell's message."""

    skill: float | None
    mark: str
    message: str


@dataclass(frozen=True)
class Heatmap:
    """Rows (methods, best overall first), columns ((suite, metric)) and their tiles."""

    methods: list[str]
    columns: list[tuple[str, str]]
    tiles: dict[tuple[str, str, str], Tile]  # (suite, metric, method) -> tile
    uninformative: set[tuple[str, str]]


def _mark(c: Cell, survivors: set) -> str:
    if c.outcome == PASS and c.votes and c.informative is not False and cell_id(c) not in survivors:
        return "(✓)"
    if c.outcome in (PASS, FAIL, INCONCLUSIVE) and (not c.votes or c.informative is False):
        return "i"
    return MARKS.get(c.outcome, c.outcome[:1])


def heatmap(cells: list[Cell], summary: dict) -> Heatmap:
    """The heatmap of a run's cells, rows in the overall ranking's order (``summary``: report.summarise's)."""
    methods = [r["method"] for r in summary["overall"]]
    columns = []
    for s in summary["suites"]:
        names = {c.metric for c in cells if c.suite == s}
        order = [m.name for m in PROPERTIES[s].metrics] if s in PROPERTIES else sorted(names)
        columns += [(s, m) for m in order if m in names]
    tiles = {cell_id(c): Tile(None if c.skill is None else float(c.skill["mean"]), _mark(c, summary["survivors"]),
                              c.message) for c in cells}
    uninformative = {(c.suite, c.metric) for c in cells if c.informative is False}
    return Heatmap(methods, columns, tiles, uninformative)


def colour(skill: float | None) -> str:
    """Hex colour of a skill: red at 0 (the negative control), white at 0.5 (the pass level), green at 1 and above."""
    if skill is None:
        return "#eaeef2"
    t = min(1.0, max(0.0, skill))
    if t < 0.5:
        k = t / 0.5
        rgb = (255, int(120 + 135 * k), int(120 + 135 * k))
    else:
        k = (t - 0.5) / 0.5
        rgb = (int(255 - 185 * k), int(255 - 75 * k), int(255 - 155 * k))
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def write_png(h: Heatmap, path: Path) -> Path:
    """Save the heatmap as a PNG for papers (the same colours and marks as the report)."""
    matplotlib.use("Agg")  # the backend is chosen when drawing, never when the module is imported
    n_rows, n_cols = len(h.methods), len(h.columns)
    fig, ax = plt.subplots(figsize=(2.2 + 0.62 * n_cols, 1.4 + 0.26 * n_rows))
    image = [[to_rgb(colour(h.tiles.get((s, m, method), Tile(None, "", "")).skill)) for s, m in h.columns]
             for method in h.methods]
    ax.imshow(image, aspect="auto", interpolation="nearest")
    for i, method in enumerate(h.methods):
        for j, (s, m) in enumerate(h.columns):
            tile = h.tiles.get((s, m, method))
            if tile is not None:
                ax.text(j, i, tile.mark, ha="center", va="center", fontsize=6.5)
    ax.set_yticks(range(n_rows), h.methods, fontsize=7)
    ax.set_xticks(range(n_cols), [f"{m}{' (uninformative)' if (s, m) in h.uninformative else ''}"
                                  for s, m in h.columns], rotation=60, ha="right", fontsize=7)
    # Property boundaries and names above the columns.
    start = 0
    for s in dict.fromkeys(c[0] for c in h.columns):
        width = sum(1 for c in h.columns if c[0] == s)
        name = PROPERTIES[s].name if s in PROPERTIES else s
        # Wrapped to its columns' width, so neighbouring properties' names do not run into each other.
        ax.text(start + (width - 1) / 2, -0.8, textwrap.fill(name, max(8, 7 * width), break_long_words=False), ha="center", va="bottom",
                fontsize=7, weight="bold")
        if start:
            ax.axvline(start - 0.5, color="k", lw=0.8)
        start += width
    ax.set_title("skill per method and metric (0 = negative control, 1 = positive control; ✓ pass, ✗ fail, "
                 "? inconclusive)",
                 fontsize=8, pad=34)
    with atomic_path(path) as tmp:
        # bbox_inches="tight" fits the labels at any size; tight_layout cannot for a one-row heatmap.
        fig.savefig(tmp, dpi=150, format="png", bbox_inches="tight")
    plt.close(fig)
    return path
