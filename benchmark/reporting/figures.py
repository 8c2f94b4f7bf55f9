"""The original study's figure: flipped cats, clean and stamped, with every method's map."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from benchmark.cache import atomic_path
from benchmark.grading.grader import Grader
from benchmark.methods import get_method
from benchmark.timelimit import CellTimeout, time_limit


def saliency_grid(grader: Grader, methods: list[str], path: Path, n_examples: int = 3) -> Path:
    """Save a PNG: per example a row block of clean image, stamped image, mask and each method's |map|."""
    matplotlib.use("Agg")  # the backend is chosen when drawing, never when the module is imported
    s = grader.images.sample_set
    n = min(n_examples, len(s.x))
    maps = {}
    limit = getattr(grader, "cell_timeout_s", None)
    # A method that does not apply to this architecture has no map to show; the leaderboards say N/A and why.
    methods = [m for m in methods if not get_method(m).unsupported(grader.store.models["biased"])]
    for m in methods:
        try:
            # A hanging method must not hang the report: the figure gets the same per-cell limit as the grid.
            # Grader.explain turns a method that modified the model into an AttributionError.
            with time_limit(limit, "figure"):
                maps[m] = np.abs(grader.store.figure_maps(m, n)[:, 0])
        except CellTimeout:
            maps[m] = "ERROR\ntimed out"
        except Exception as exc:  # a crashing method is shown as such, never dropped
            maps[m] = f"ERROR\n{type(exc).__name__}"
    panels = ["clean", "stamped (→ dog)", "watermark mask", *methods]
    cols = min(10, len(panels))
    rows_per = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(n * rows_per, cols, figsize=(1.6 * cols, 1.75 * n * rows_per), squeeze=False)
    for i in range(n):
        for j, name in enumerate(panels):
            ax = axes[i * rows_per + j // cols][j % cols]
            if name == "clean":
                ax.imshow(s.x_clean[i].transpose(1, 2, 0))
            elif name.startswith("stamped"):
                ax.imshow(s.x[i].transpose(1, 2, 0))
            elif name == "watermark mask":
                ax.imshow(s.masks[i, 0], cmap="gray", vmin=0, vmax=1)
            elif isinstance(maps[name], str):
                ax.text(0.5, 0.5, maps[name], ha="center", va="center", fontsize=6, color="red")
            else:
                m = maps[name][i]
                ax.imshow(m / (m.max() + 1e-12), cmap="inferno", vmin=0, vmax=1)
            ax.set_title(name, fontsize=6)
        for j in range(len(panels), rows_per * cols):
            axes[i * rows_per + j // cols][j % cols].set_visible(False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Flipped cats: the biased model's 'dog' explained (|attribution|, per-map max-normalised)", fontsize=8)
    # tight_layout ignores the suptitle: keep 0.4 in at the top for it, or it overlaps the first panel titles.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
