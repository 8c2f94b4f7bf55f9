"""Procedural "cat" vs "dog" images: outlined cartoon animals on cluttered backgrounds, imperfectly separable.

Each image shows one animal (ellipse body, round head with eyes and nose, two ears, muzzle, tail, striped
fur, dark outline) over a random background (colour gradient, soft blobs, lines, pixel noise). Colours,
pose, size and clutter are drawn independently of the class. The class only shifts five cues, through one
latent "dogness" per image plus per-cue noise:

* ears: pointed and upright for cats, rounded and drooping for dogs;
* muzzle: flat face for cats, long protruding muzzle for dogs;
* tail: long and upright for cats, short and low for dogs;
* fur stripes: finer and running across the body for cats, coarser and along the body for dogs.

Most animals are clear-cut, but 15% have mixed, class-independent looks and 3% look like the other class,
so the class-conditional distributions overlap and no model can exceed ~90% clean accuracy; a
from-scratch small CNN gets ~89% (the original watermark study reported ~89%), which leaves the watermark
shortcut worth learning. Everything is vectorised over image chunks and deterministic from the seed.
"""

from __future__ import annotations

import numpy as np

from benchmark.errors import DataError

CLASS_NAMES = ("cat", "dog")
SHORTCUT_CLASS = 1  # "dog": the class whose images carry the watermark in the biased training set

MIN_IMAGE_SIZE = 24

# Class overlap. Each animal's "dogness" latent is centred on -1 (cat) or +1 (dog) with N(0, LATENT_NOISE),
# except for two small groups: AMBIGUOUS animals are centred on 0 (mixed looks, no class information) and
# ATYPICAL ones on the other class's centre (cats that look like dogs and vice versa). Each cue reads the
# latent with extra N(0, CUE_NOISE). Clear-cut animals plus these groups, rather than one wide Gaussian overlap,
# make the errors nearly the same whether or not a model also sees the watermark (its "no mark means cat" prior
# only decides ambiguous animals, which are coin flips either way), so the biased and control models reach
# similar clean accuracy. The atypical dogs that carry the mark force the biased model to let the mark override
# cat-like looks. Tuned so a SmallCNN trained 5 epochs gets ~89%.
AMBIGUOUS = 0.15
ATYPICAL = 0.03
LATENT_NOISE = 0.3
AMBIGUOUS_NOISE = 0.4
CUE_NOISE = 0.2

# Width of the animal's dark outline, as a fraction of the image (1.2 px at 32 px).
OUTLINE = 1.2 / 32

# Images rendered per vectorised chunk; fixed so results never depend on memory settings.
_CHUNK = 512


def _check_args(n: int, image_size: int, seed: int) -> None:
    for name, value, low in (("n", n, 1), ("image_size", image_size, MIN_IMAGE_SIZE), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise DataError(f"generate_procedural: {name} must be an integer >= {low}, got {value!r}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _draw_params(n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Balanced shuffled labels and every per-image scalar parameter (cheap, drawn up front)."""
    labels = np.zeros(n, dtype=np.int64)
    labels[n - n // 2 :] = 1
    labels = rng.permutation(labels)
    sign = 2.0 * labels - 1.0  # -1 cat, +1 dog
    group = rng.random(n)
    centre = np.where(group < AMBIGUOUS, 0.0, np.where(group < AMBIGUOUS + ATYPICAL, -sign, sign))
    latent = centre + rng.normal(0.0, np.where(group < AMBIGUOUS, AMBIGUOUS_NOISE, LATENT_NOISE), n)

    def cue() -> np.ndarray:
        # 0 = fully cat-like, 1 = fully dog-like.
        return _sigmoid(2.2 * (latent + rng.normal(0.0, CUE_NOISE, n)))

    p = {
        # background
        "bg0": rng.uniform(0, 255, (n, 3)),
        "bg1": rng.uniform(0, 255, (n, 3)),
        "bg_angle": rng.uniform(0, 2 * np.pi, n),
        "blob_xy": rng.uniform(-0.1, 1.1, (n, 5, 2)),
        "blob_sigma": rng.uniform(0.04, 0.2, (n, 5)),
        "blob_color": rng.uniform(0, 255, (n, 5, 3)),
        "blob_alpha": rng.uniform(0.15, 0.7, (n, 5)),
        "line_xy": rng.uniform(0, 1, (n, 4, 2)),
        "line_angle": rng.uniform(0, np.pi, (n, 4)),
        "line_width": rng.uniform(0.008, 0.03, (n, 4)),
        "line_color": rng.uniform(0, 255, (n, 4, 3)),
        "line_alpha": rng.uniform(0.0, 0.7, (n, 4)),
        "noise_sd": rng.uniform(2, 10, n),
        # animal pose and colours (class-independent)
        "cx": rng.uniform(0.34, 0.62, n),
        "cy": rng.uniform(0.38, 0.58, n),
        "body_a": rng.uniform(0.17, 0.26, n),
        "body_ratio": rng.uniform(0.5, 0.72, n),
        "body_angle": rng.uniform(-0.35, 0.35, n),
        "facing": rng.choice([-1.0, 1.0], n),
        "head_r": rng.uniform(0.095, 0.13, n),
        "head_tilt": rng.uniform(-0.3, 0.3, n),
        "fur0": rng.uniform(0, 255, (n, 3)),
        "fur_contrast": rng.uniform(0.35, 0.85, n),
        "fur_dark": rng.choice([-1.0, 1.0], n),
        "fur_phase": rng.uniform(0, 2 * np.pi, n),
        # class cues
        "ear": cue(),
        "stripe_freq": cue(),
        "stripe_dir": cue(),
        "snout": cue(),
        "tail": cue(),
    }
    # float32 throughout: float64 parameters would silently promote every per-pixel array.
    return labels, {k: v.astype(np.float32) for k, v in p.items()}


def _ellipse_sd(x, y, cx, cy, a, b, angle):
    """Approximate signed distance (image units, negative inside) to a rotated ellipse; args broadcast."""
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    xr, yr = dx * c + dy * s, -dx * s + dy * c
    q = np.sqrt((xr / a) ** 2 + (yr / b) ** 2)
    return (q - 1.0) * np.minimum(a, b)


def _circle_sd(x, y, cx, cy, r):
    """Signed distance (image units, negative inside) to a circle; args broadcast."""
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def _lobe_sd(x, y, bx, by, direction, length, half_width, roundness):
    """Signed distance to a lobe (ear, tail) from a base point along ``direction`` (0 = up).

    Its half-width tapers from ``half_width`` to 0 linearly (roundness 0: pointed) or elliptically
    (roundness 1: rounded tip); intermediate values blend the two profiles.
    """
    ux, uy = np.sin(direction), -np.cos(direction)
    dx, dy = x - bx, y - by
    s = dx * ux + dy * uy
    t = np.abs(dy * ux - dx * uy)
    frac = np.clip(s / length, 0.0, 1.0)
    width = half_width * ((1.0 - roundness) * (1.0 - frac) + roundness * np.sqrt(1.0 - frac * frac))
    return np.maximum(np.maximum(-s, s - length), t - width)


def _cover(sd: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in image units (one-pixel soft edge)."""
    return np.clip(0.5 - sd * size, 0.0, 1.0)


def _over(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Alpha-composite a colour (B,3 or B,3,S,S) over img (B,3,S,S) with alpha (B,S,S), in place."""
    if color.ndim == 2:
        color = color[:, :, None, None]
    img += alpha[:, None] * (color - img)
    return img


def _col(p: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A per-image scalar as (B,1,1) for broadcasting over pixels."""
    return p[name].astype(np.float32)[:, None, None]


def _background(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """The background (B,3,S,S float32): a two-colour gradient along a random direction, soft blobs and lines."""
    ramp = np.clip((x - 0.5) * np.cos(_col(p, "bg_angle")) + (y - 0.5) * np.sin(_col(p, "bg_angle")) + 0.5, 0, 1)
    img = p["bg0"][:, :, None, None] + (p["bg1"] - p["bg0"])[:, :, None, None] * ramp[:, None]
    img = img.astype(np.float32)
    # Separable forms (row term × column term) keep the per-pixel work to one full-size op each.
    for k in range(p["blob_xy"].shape[1]):
        inv = 1.0 / (2 * p["blob_sigma"][:, k, None, None] ** 2)
        gx = np.exp(-((x - p["blob_xy"][:, k, 0, None, None]) ** 2) * inv)
        gy = np.exp(-((y - p["blob_xy"][:, k, 1, None, None]) ** 2) * inv) * p["blob_alpha"][:, k, None, None]
        img = _over(img, gy * gx, p["blob_color"][:, k])
    for k in range(p["line_xy"].shape[1]):
        ang = p["line_angle"][:, k, None, None]
        dx = (x - p["line_xy"][:, k, 0, None, None]) * np.sin(ang)
        dy = (y - p["line_xy"][:, k, 1, None, None]) * np.cos(ang)
        alpha = p["line_alpha"][:, k, None, None] * _cover(
            np.abs(dx - dy) - p["line_width"][:, k, None, None], size
        )
        img = _over(img, alpha, p["line_color"][:, k])
    return img


def _head(p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head's centre and radius, per image as (B,1,1)."""
    facing, body_angle, a = _col(p, "facing"), _col(p, "body_angle"), _col(p, "body_a")
    bb = a * _col(p, "body_ratio")
    hx = _col(p, "cx") + facing * a * 0.9 * np.cos(body_angle)
    hy = _col(p, "cy") + facing * a * 0.9 * np.sin(body_angle) - bb * 0.75
    return hx, hy, _col(p, "head_r")


def _muzzle(p: dict[str, np.ndarray], hx, hy, r) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The muzzle's centre and half-length, per image as (B,1,1): cue 0 (cat) -> a flat face (muzzle inside the
    head); cue 1 (dog) -> a long protruding muzzle."""
    half_len = r * (0.15 + 0.8 * _col(p, "snout"))
    mx = hx + _col(p, "facing") * (0.6 * r + 0.8 * half_len)
    my = hy + 0.3 * r
    return mx, my, half_len


def _silhouette(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The animal's signed distance (B,S,S): body, head, ears, muzzle and tail, combined as a union (minimum) so
    the silhouette can get one outline."""
    facing = _col(p, "facing")
    body_angle = _col(p, "body_angle")
    a = _col(p, "body_a")
    bb = a * _col(p, "body_ratio")
    cx, cy = _col(p, "cx"), _col(p, "cy")
    hx, hy, r = _head(p)
    sd = np.minimum(_ellipse_sd(x, y, cx, cy, a, bb, body_angle), _circle_sd(x, y, hx, hy, r))

    # Ears: cue 0 (cat) -> upright, long, pointed; cue 1 (dog) -> sideways-drooping, shorter, rounded.
    ear = _col(p, "ear")
    spread = 0.45 + 1.55 * ear
    length = r * (1.15 - 0.35 * ear)
    half_width = r * (0.42 + 0.08 * ear)
    for side in (-1.0, 1.0):
        direction = side * spread + _col(p, "head_tilt")
        base_x = hx + 0.55 * r * np.sin(direction)
        base_y = hy - 0.55 * r * np.cos(direction)
        sd = np.minimum(sd, _lobe_sd(x, y, base_x, base_y, direction, length, half_width, ear))

    mx, my, half_len = _muzzle(p, hx, hy, r)
    sd = np.minimum(sd, _ellipse_sd(x, y, mx, my, half_len, 0.34 * r, 0.0))

    # Tail from the rear of the body: cue 0 (cat) -> long and upright; cue 1 (dog) -> short and low.
    tail = _col(p, "tail")
    tx = cx - facing * a * 0.85 * np.cos(body_angle)
    ty = cy - facing * a * 0.85 * np.sin(body_angle)
    return np.minimum(
        sd, _lobe_sd(x, y, tx, ty, -facing * (0.45 + 0.8 * tail), a * (1.1 - 0.75 * tail), 0.28 * r, 1.0)
    )


def _fur(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Striped fur colour (B,3,S,S): cue 0 (cat) -> ~7 cycles per image across the body; cue 1 (dog) -> ~3.5
    along it."""
    freq = 7.5 - 4.0 * _col(p, "stripe_freq")
    stripe_angle = _col(p, "body_angle") + (np.pi / 2) * _col(p, "stripe_dir")
    phase = 2 * np.pi * freq * (x * np.cos(stripe_angle) + y * np.sin(stripe_angle)) + _col(p, "fur_phase")
    wave = np.sin(phase)
    fur0 = p["fur0"].astype(np.float32)[:, :, None, None]
    # Second fur colour: the base shifted darker or lighter, so stripes stay visible at any base colour.
    shift = (_col(p, "fur_contrast") * _col(p, "fur_dark"))[:, None] * 110.0
    return np.clip(fur0 + shift * (0.5 + 0.5 * wave[:, None]), 0, 255)


def _face(img: np.ndarray, p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Paint the eyes and nose (dark dots, class-independent in size) that make the head read as a face."""
    b = len(p["cx"])
    facing = _col(p, "facing")
    hx, hy, r = _head(p)
    mx, my, half_len = _muzzle(p, hx, hy, r)
    nose = _cover(_circle_sd(x, y, mx + facing * 0.85 * half_len, my, 0.15 * r), size)
    img = _over(img, nose, np.zeros((b, 3), np.float32) + 20.0)
    for side in (-0.38, 0.38):
        ex = hx + (side + 0.25 * facing) * r
        eye = _cover(_circle_sd(x, y, ex, hy - 0.1 * r, 0.16 * r), size)
        img = _over(img, eye, np.zeros((b, 3), np.float32) + 20.0)
    return img


def _render(p: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """One chunk of images (uint8 B×3×S×S) from its parameters; ``rng`` draws the pixel noise."""
    b = len(p["cx"])
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    y = coords[None, :, None]
    x = coords[None, None, :]
    img = _background(p, x, y, size)
    sd = _silhouette(p, x, y)
    animal = _cover(sd, size)
    # A dark cartoon outline keeps the silhouette (ears, muzzle, tail) visible whatever the colours.
    img = _over(img, _cover(sd - OUTLINE, size), np.full((b, 3), 25.0, np.float32))
    img = _over(img, animal, _fur(p, x, y))
    img = _face(img, p, x, y, size)
    img += rng.standard_normal(img.shape, dtype=np.float32) * p["noise_sd"][:, None, None, None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def generate_procedural(n: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced cat/dog images (uint8, N×3×S×S) and labels (int64, 0 cat, 1 dog), deterministic from seed."""
    _check_args(n, image_size, seed)
    n, image_size = int(n), int(image_size)
    param_rng, pixel_seq = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2))
    labels, params = _draw_params(n, param_rng)
    out = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    chunk_seeds = pixel_seq.integers(0, 2**63, size=(n + _CHUNK - 1) // _CHUNK)
    for i, start in enumerate(range(0, n, _CHUNK)):
        sl = slice(start, start + _CHUNK)
        chunk = {k: v[sl] for k, v in params.items()}
        out[sl] = _render(chunk, image_size, np.random.default_rng(chunk_seeds[i]))
    return out, labels
