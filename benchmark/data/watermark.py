"""A human-visible corner watermark (pixel-font text or a ©-style logo) and the exact mask of what it changed.

The mark is rendered once per image size as an anti-aliased coverage map: text from the built-in 5×7
pixel font below (box-resampled to the requested width), or a ring with a "C" inside, supersampled. An
optional contrasting one-pixel outline keeps it readable on backgrounds of the same colour. Each image
gets the mark at its placement (one fixed corner, a corner drawn per image, or anywhere) shifted inwards by
a uniform random jitter, alpha-blended with ``opacity``. ``footprint_fraction`` is the share of the image
under the mark's bounding box, which the world's manifest records.

The returned mask is, by definition, the set of pixels whose uint8 value changed in at least one channel.
Footprint pixels that already had the mark's (or outline's) colour, or where the blend rounds back to the
original value, are not in the mask: nothing there carries evidence of the mark.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from benchmark.errors import ConfigError, DataError, did_you_mean

KINDS = ("text", "logo")
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
# Where a mark may go: one fixed corner; a corner drawn uniformly per image; or a uniform position anywhere.
PLACEMENTS = (*CORNERS, "any-corner", "anywhere")

# Gap between the image border and the un-jittered mark, as a fraction of the image width.
MARGIN = 0.04
# Outline opacity relative to the mark's: strong enough to separate a white mark from a white sky,
# light enough that the mark, not a dark box, dominates.
OUTLINE_STRENGTH = 0.6

# 5×7 pixel font ("#" = ink). Lower-case text is drawn in upper case.
_FONT_ROWS = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("####.", "....#", "....#", ".###.", "....#", "....#", "####."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    " ": (".....",) * 7,
    "-": (".....", ".....", ".....", ".###.", ".....", ".....", "....."),
    ".": (".....", ".....", ".....", ".....", ".....", ".....", "..#.."),
    "!": ("..#..", "..#..", "..#..", "..#..", "..#..", ".....", "..#.."),
}
FONT_CHARS = "".join(_FONT_ROWS)


@dataclass(frozen=True)
class WatermarkSpec:
    """How the shortcut mark looks and where it goes; scale = mark width as a fraction of image width."""

    kind: str = "text"
    text: str = "WM"
    # 0.25 of the width without an outline covers 3.9% of the image at 32 and 64 px (the original study's
    # mark was small but human-visible); a larger mark is a stronger, more salient shortcut. Opaque, because at
    # 0.85 the quick model's mean p(dog) on flips fell to 0.90 on seed 1, the model card's floor (RESULTS.md).
    scale: float = 0.25
    opacity: float = 1.0
    color: tuple[int, int, int] = (255, 255, 255)
    jitter: float = 0.08
    corner: str = "any-corner"  # one of PLACEMENTS
    outline: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(
                f"watermark kind must be one of {KINDS}, got {self.kind!r}.{did_you_mean(str(self.kind), KINDS)}"
            )
        if self.corner not in PLACEMENTS:
            raise ConfigError(
                f"watermark corner must be one of {PLACEMENTS}, got {self.corner!r}."
                f"{did_you_mean(str(self.corner), PLACEMENTS)}"
            )
        if not isinstance(self.outline, bool):
            raise ConfigError(f"watermark outline must be true or false, got {self.outline!r}")
        if self.kind == "text":
            if not isinstance(self.text, str) or not self.text.strip():
                raise ConfigError(f"watermark text must be a non-empty string, got {self.text!r}")
            bad = sorted({c for c in self.text.upper() if c not in _FONT_ROWS})
            if bad:
                raise ConfigError(
                    f"watermark text {self.text!r} uses characters the built-in font lacks: {bad}; "
                    f"use letters, digits, space or '-.!'"
                )
        checks = (
            ("scale", "(0, 1)", lambda v: 0 < v < 1),
            ("opacity", "(0, 1]", lambda v: 0 < v <= 1),
            ("jitter", "[0, 0.5]", lambda v: 0 <= v <= 0.5),
        )
        for name, interval, inside in checks:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not inside(value):
                raise ConfigError(f"watermark {name} must be a number in {interval}, got {value!r}")
            # 1 and 1.0 must give the same cache key (the key hashes the JSON form).
            object.__setattr__(self, name, float(value))
        color = self.color
        if (
            not isinstance(color, (tuple, list))
            or len(color) != 3
            or not all(
                isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255 for c in color
            )
        ):
            raise ConfigError(f"watermark color must be three integers in [0, 255] (R, G, B), got {color!r}")
        # Lists (e.g. from JSON) become tuples so the spec stays hashable and compares equal.
        object.__setattr__(self, "color", tuple(int(c) for c in color))

    def replace(self, **changes) -> WatermarkSpec:
        """Copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _text_bitmap(text: str) -> np.ndarray:
    glyphs = [
        np.array([[ch == "#" for ch in row] for row in _FONT_ROWS[c]], dtype=np.float32) for c in text.upper()
    ]
    gap = np.zeros((7, 1), dtype=np.float32)
    parts = []
    for i, g in enumerate(glyphs):
        if i:
            parts.append(gap)
        parts.append(g)
    return np.concatenate(parts, axis=1)


def _logo_coverage(size: int, supersample: int = 8) -> np.ndarray:
    n = size * supersample
    c = (np.arange(n) + 0.5) / n - 0.5
    y, x = np.meshgrid(c, c, indexing="ij")
    r = np.hypot(x, y)
    ring = (r <= 0.5) & (r >= 0.38)
    # A "C": an inner ring with a wedge cut out on the right.
    inner = (r <= 0.25) & (r >= 0.14) & ~((x > 0) & (np.abs(y) < 0.6 * x))
    cov = (ring | inner).astype(np.float32)
    return cov.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


@lru_cache(maxsize=64)
def _mark_layers(spec: WatermarkSpec, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(mark coverage, outline coverage) in [0, 1], (h+2, w+2) with an outline ring, (h, w) without."""
    w = max(3, int(round(spec.scale * width)))
    if spec.kind == "text":
        bitmap = _text_bitmap(spec.text)
        h = max(3, int(round(w * bitmap.shape[0] / bitmap.shape[1])))
        # Box resampling = area coverage, so thin strokes fade instead of vanishing at small sizes.
        cov = np.asarray(
            Image.fromarray(bitmap, mode="F").resize((w, h), Image.Resampling.BOX), dtype=np.float32
        )
    else:
        cov = _logo_coverage(w)
    if not spec.outline:
        cov = np.clip(cov, 0.0, 1.0)
        return cov, np.zeros_like(cov)
    cov = np.clip(np.pad(cov, 1), 0.0, 1.0)
    # One-pixel outline: 3×3 dilation of the mark, only where the mark itself is not fully opaque.
    padded = np.pad(cov, 1)
    h2, w2 = cov.shape
    dil = np.max([padded[dy : dy + h2, dx : dx + w2] for dy in range(3) for dx in range(3)], axis=0)
    outline = np.clip(dil - cov, 0.0, 1.0)
    return cov, outline


def mark_size(spec: WatermarkSpec, height: int, width: int) -> tuple[int, int]:
    """(height, width) in pixels of the mark's footprint, outline included, on an image of this size."""
    cov, _ = _mark_layers(spec, width)
    return cov.shape


def footprint_fraction(spec: WatermarkSpec, size: int) -> float:
    """Share of a size×size image covered by the mark's bounding box (outline included): its footprint."""
    height, width = mark_size(spec, size, size)
    return height * width / (size * size)


def _check_images(images) -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = type(images).__name__ if not isinstance(images, np.ndarray) else f"{images.dtype} array"
        raise DataError(f"stamp() needs a uint8 numpy array (N,3,H,W) or (3,H,W), got {kind}")
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise DataError(
            f"stamp() needs images shaped (N,3,H,W) or (3,H,W) (RGB, channels first), got {images.shape}"
        )
    return images


def _offsets(spec: WatermarkSpec, n: int, height: int, width: int, mh: int, mw: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Top-left (row, column) of each of ``n`` marks, drawn per the spec's placement and jitter."""
    if spec.corner == "anywhere":
        return rng.integers(0, height - mh + 1, size=n), rng.integers(0, width - mw + 1, size=n)
    # Jitter moves the mark inwards from the corner; it is clipped so the mark always stays inside.
    margin = int(round(MARGIN * width))
    room_x, room_y = max(0, width - mw - margin), max(0, height - mh - margin)
    jx = rng.integers(0, min(int(round(spec.jitter * width)), room_x) + 1, size=n)
    jy = rng.integers(0, min(int(round(spec.jitter * height)), room_y) + 1, size=n)
    off_x = np.minimum(margin, width - mw) + jx
    off_y = np.minimum(margin, height - mh) + jy
    if spec.corner == "any-corner":
        corner = rng.integers(0, len(CORNERS), size=n)
        right = np.isin(corner, [i for i, c in enumerate(CORNERS) if c.endswith("right")])
        bottom = np.isin(corner, [i for i, c in enumerate(CORNERS) if c.startswith("bottom")])
    else:
        right = np.full(n, spec.corner.endswith("right"))
        bottom = np.full(n, spec.corner.startswith("bottom"))
    off_x = np.where(right, width - mw - off_x, off_x)
    off_y = np.where(bottom, height - mh - off_y, off_y)
    return off_y, off_x


def stamp(images: np.ndarray, spec: WatermarkSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (stamped copy, bool mask of the pixels that changed) for uint8 (3,H,W) or (N,3,H,W) images."""
    images = _check_images(images)
    single = images.ndim == 3
    batch = images[None] if single else images
    n, _, height, width = batch.shape
    cov, outline = _mark_layers(spec, width)
    mh, mw = cov.shape
    if mh > height or mw > width:
        raise ConfigError(
            f"the watermark ({mw}×{mh} px) does not fit in {width}×{height} images; lower WatermarkSpec.scale or shorten the text"
        )
    off_y, off_x = _offsets(spec, n, height, width, mh, mw, rng)

    color = np.array(spec.color, dtype=np.float32)[:, None, None]
    luminance = 0.299 * spec.color[0] + 0.587 * spec.color[1] + 0.114 * spec.color[2]
    outline_color = np.float32(0.0 if luminance > 127 else 255.0)
    a_mark = (spec.opacity * cov)[None]
    a_line = (spec.opacity * OUTLINE_STRENGTH * outline)[None]

    out = batch.copy()
    for i in range(n):
        ys, xs = slice(off_y[i], off_y[i] + mh), slice(off_x[i], off_x[i] + mw)
        patch = batch[i, :, ys, xs].astype(np.float32)
        patch = patch + a_line * (outline_color - patch)
        patch = patch + a_mark * (color - patch)
        out[i, :, ys, xs] = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
    mask = (out != batch).any(axis=1)
    return (out[0], mask[0]) if single else (out, mask)
