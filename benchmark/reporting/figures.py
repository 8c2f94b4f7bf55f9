"""The original study's figure: flipped cats, clean and stamped, with every method's map."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from benchmark.cache import atomic_path
from benchmark.grading.grader import Grader
from benchmark.methods import get_method
from benchmark.timelimit import CellTimeout, time_limit


def saliency_grid(grader: Grader, methods: list[str], path: Path, n_examples: int = 3,
                  maps_of: Callable[[str, int], np.ndarray] | None = None) -> Path:
    """Save a PNG: per example a row block of clean image, stamped image, mask and each method's |map| (``maps_of``:
    method, n -> its first n maps on the biased model; by default the grader's)."""
    maps_of = maps_of or grader.store.figure_maps
    matplotlib.use("Agg")  # the backend is chosen when drawing, never when the module is imported
    s = grader.images.sample_set
    n = min(n_examples, len(s.x))
    # A method that does not apply to this architecture has no map to show; the leaderboards say N/A and why.
    methods = [m for m in methods if not get_method(m).unsupported(grader.store.models["biased"])]
    maps = figure_panels(methods, maps_of, n, getattr(grader, "cell_timeout_s", None))
    return _draw(s, maps, ["clean", "stamped (→ dog)", "watermark mask", *methods], n, Path(path))


def figure_panels(methods: list[str], maps_of: Callable[[str, int], np.ndarray], n: int,
                  limit: float | None) -> dict[str, np.ndarray | str]:
    """Each method's |maps| of the first ``n`` examples, or the text of its ERROR panel (crashed, timed out, or not
    finite: never drawn as if it were a map)."""
    maps: dict[str, np.ndarray | str] = {}
    for m in methods:
        try:
            # A hanging method must not hang the report: the figure gets the same per-cell limit as the grid.
            # Grader.explain turns a method that modified the model into an AttributionError.
            with time_limit(limit, "figure"):
                maps[m] = np.abs(maps_of(m, n)[:, 0])
        except CellTimeout:
            maps[m] = "ERROR\ntimed out"
        except Exception as exc:  # a crashing method is shown as such, never dropped
            maps[m] = f"ERROR\n{type(exc).__name__}"
        else:
            if not np.isfinite(maps[m]).all():  # a NaN map is an ERROR cell in the grid, so here too
                maps[m] = "ERROR\nnot finite"
    return maps


def _panel(s, maps: dict, name: str, i: int) -> np.ndarray | str:
    """Panel ``name`` of example ``i`` as an (H, W, 3) RGB image in [0, 1], or the text of an ERROR panel."""
    if name == "clean":
        return np.clip(s.x_clean[i].transpose(1, 2, 0), 0, 1)
    if name.startswith("stamped"):
        return np.clip(s.x[i].transpose(1, 2, 0), 0, 1)
    if name == "watermark mask":
        return np.repeat(np.clip(s.masks[i, 0], 0, 1)[..., None], 3, axis=2)
    if isinstance(maps[name], str):
        return maps[name]
    m = maps[name][i]
    return matplotlib.colormaps["inferno"](m / (m.max() + 1e-12))[..., :3]


def _draw(s, maps: dict, panels: list[str], n: int, path: Path) -> Path:
    """Every panel tiled into one image on one Axes, titled, saved atomically."""
    cols = min(10, len(panels))
    rows_per = math.ceil(len(panels) / cols)
    h, w = s.x.shape[2:]
    band, gap = max(4, h // 4), max(2, w // 8)  # room for each panel's title, and between panels
    canvas = np.ones(((h + band) * n * rows_per, (w + gap) * cols, 3), dtype=np.float32)
    labels = []  # (x, y, text, vertical alignment, colour)
    for i in range(n):
        for j, name in enumerate(panels):
            y0 = (i * rows_per + j // cols) * (h + band) + band
            x0 = (j % cols) * (w + gap) + gap // 2
            tile = _panel(s, maps, name, i)
            if isinstance(tile, str):
                labels.append((x0 + w / 2, y0 + h / 2, tile, "center", "red"))
            else:
                canvas[y0:y0 + h, x0:x0 + w] = tile
            labels.append((x0 + w / 2, y0 - 0.5, name, "bottom", "black"))
    # One Axes for the whole grid: an Axes per panel made matplotlib spend seconds per report on layout alone.
    fig = plt.figure(figsize=(1.6 * cols, 1.75 * n * rows_per))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1 - 0.4 / fig.get_figheight()))  # 0.4 in at the top for the suptitle
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for x, y, text, va, colour in labels:
        ax.text(x, y, text, ha="center", va=va, fontsize=6, color=colour)
    fig.suptitle("Flipped cats: the biased model's 'dog' explained (|attribution|, per-map max-normalised)", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
