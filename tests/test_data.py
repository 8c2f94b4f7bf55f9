"""Tests for benchmark.data: procedural images, watermark masks, cached worlds and real-photo folders."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.data import (
    BIASED,
    CLASS_NAMES,
    CONTROL,
    SHORTCUT_CLASS,
    BiasSpec,
    DatasetCacheWarning,
    DataSpec,
    WatermarkSpec,
    build_world,
    generate_procedural,
    load_image_folder,
    load_kaggle_folder,
    load_oxford_pet,
    stamp,
    world_key,
)
from benchmark.data import folders as folders_mod
from benchmark.errors import ConfigError, DataError
from benchmark.profiles import PROFILES

SMALL = {"n_train": 200, "n_test": 40}


def _save(path: Path, array_or_image, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    img.save(path, format=fmt)
    return path


def _photo(rng: np.random.Generator, h: int = 40, w: int = 30, color=None) -> np.ndarray:
    if color is not None:
        return np.full((h, w, 3), color, dtype=np.uint8)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _class_folder(root: Path, names=("cat", "dog"), n: int = 4, ext: str = "png") -> Path:
    rng = np.random.default_rng(0)
    for label, name in enumerate(names):
        for i in range(n):
            # Solid colours per class (dark vs bright) let tests check which label a folder got.
            _save(
                root / name / f"{i}.{ext}", _photo(rng, color=(40, 40, 40) if label == 0 else (220, 220, 220))
            )
    return root


# ---------------------------------------------------------------------------------------------------------
# Procedural generator


@pytest.mark.parametrize("n, size", [(10, 32), (7, 24), (4, 64)])
def test_procedural_shapes_dtypes_and_balance(n, size):
    x, y = generate_procedural(n, size, seed=3)
    assert x.shape == (n, 3, size, size) and x.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.int64
    assert abs(int((y == 0).sum()) - int((y == 1).sum())) <= 1
    assert x.std() > 20  # not blank


def test_procedural_is_deterministic_per_seed():
    a, ya = generate_procedural(12, 32, seed=5)
    b, yb = generate_procedural(12, 32, seed=5)
    c, _ = generate_procedural(12, 32, seed=6)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"image_size": 16}, {"seed": -1}, {"n": 2.5}])
def test_procedural_rejects_bad_arguments(kwargs):
    args = {"n": 4, "image_size": 32, "seed": 0, **kwargs}
    with pytest.raises(DataError, match=next(iter(kwargs))):
        generate_procedural(**args)


def test_class_constants():
    assert CLASS_NAMES == ("cat", "dog") and SHORTCUT_CLASS == 1
    assert BIASED == BiasSpec(cat=0.0, dog=0.6) and CONTROL == BiasSpec(cat=0.3, dog=0.3)


# ---------------------------------------------------------------------------------------------------------
# Watermark


def _test_images(seed: int, size: int = 32) -> np.ndarray:
    x, _ = generate_procedural(6, size, seed)
    rng = np.random.default_rng(seed)
    extra = np.stack(
        [
            np.full((3, size, size), 255, np.uint8),  # white: footprint pixels of a white mark do not change
            np.zeros((3, size, size), np.uint8),
            rng.integers(0, 256, (3, size, size), dtype=np.uint8),
        ]
    )
    return np.concatenate([x, extra])


@pytest.mark.parametrize("kind", ["text", "logo"])
@pytest.mark.parametrize("color", [(255, 255, 255), (0, 0, 0), (200, 30, 30)])
def test_mask_is_exactly_the_changed_pixels(kind, color):
    spec = WatermarkSpec(kind=kind, color=color, opacity=0.7)
    for seed in range(8):
        images = _test_images(seed, size=(32, 48)[seed % 2])
        out, mask = stamp(images, spec, np.random.default_rng(seed))
        assert out.shape == images.shape and out.dtype == np.uint8
        assert mask.shape == (len(images),) + images.shape[2:] and mask.dtype == bool
        assert np.array_equal(mask, (out != images).any(axis=1))


def test_unchanged_footprint_pixels_are_excluded_from_the_mask():
    white = np.full((2, 3, 32, 32), 255, np.uint8)
    spec = WatermarkSpec(jitter=0.0, outline=True)
    out, mask = stamp(white, spec, np.random.default_rng(0))
    _, mask_noisy = stamp(np.full_like(white, 90), spec, np.random.default_rng(0))
    # On white only the dark outline changes; on grey the whole footprint does.
    assert 0 < mask[0].sum() < mask_noisy[0].sum()
    assert np.array_equal(mask, (out != white).any(axis=1))


def test_stamp_never_mutates_input_and_accepts_single_and_readonly_images():
    images = _test_images(1)
    before = images.copy()
    images.setflags(write=False)
    out, mask = stamp(images, WatermarkSpec(), np.random.default_rng(0))
    assert np.array_equal(images, before) and out is not images
    one, one_mask = stamp(images[0], WatermarkSpec(), np.random.default_rng(0))
    assert one.shape == (3, 32, 32) and one_mask.shape == (32, 32)
    assert np.array_equal(images[0], before[0])


@pytest.mark.parametrize("kind", ["text", "logo"])
def test_mark_is_visible(kind):
    images, _ = generate_procedural(64, 32, seed=2)
    out, mask = stamp(images, WatermarkSpec(kind=kind), np.random.default_rng(0))
    diff = np.abs(out.astype(int) - images.astype(int)).max(axis=1)
    area = mask.mean(axis=(1, 2))
    assert (area > 0.01).all() and (area < 0.25).all()
    assert diff[mask].mean() > 60


def test_jitter_varies_position_and_corner_is_respected():
    image = np.full((40, 3, 32, 32), 100, np.uint8)

    def boxes(spec):
        _, mask = stamp(image, spec, np.random.default_rng(0))
        return {(int(np.flatnonzero(m.any(1))[0]), int(np.flatnonzero(m.any(0))[0])) for m in mask}, mask

    jittered, _ = boxes(WatermarkSpec(jitter=0.1, corner="bottom-right"))
    fixed, _ = boxes(WatermarkSpec(jitter=0.0, corner="bottom-right"))
    assert len(jittered) > 4 and len(fixed) == 1
    for corner in ("top-left", "top-right", "bottom-left", "bottom-right"):
        _, mask = boxes(WatermarkSpec(corner=corner))
        rows, cols = np.nonzero(mask.any(axis=0))
        assert (rows.mean() < 16) == corner.startswith("top")
        assert (cols.mean() < 16) == corner.endswith("left")


def test_any_corner_draws_every_corner_and_anywhere_reaches_the_centre():
    image = np.full((200, 3, 32, 32), 100, np.uint8)
    _, mask = stamp(image, WatermarkSpec(corner="any-corner"), np.random.default_rng(0))
    centres = np.array([np.argwhere(m).mean(0) for m in mask])
    quadrants = {(bool(r < 16), bool(c < 16)) for r, c in centres}
    assert len(quadrants) == 4
    _, anywhere = stamp(image, WatermarkSpec(corner="anywhere"), np.random.default_rng(0))
    centres = np.array([np.argwhere(m).mean(0) for m in anywhere])
    assert (np.abs(centres - 15.5).max(axis=1) < 6).any()  # some marks near the middle
    assert anywhere.any(axis=(1, 2)).all()


@pytest.mark.parametrize("size", sorted({p.image_size for p in PROFILES.values()}))
def test_the_default_mark_covers_at_most_4_percent_of_every_profile_image(size):
    from benchmark.data.watermark import footprint_fraction

    image = np.full((50, 3, size, size), 100, np.uint8)
    _, mask = stamp(image, WatermarkSpec(), np.random.default_rng(0))
    assert footprint_fraction(WatermarkSpec(), size) <= 0.04
    assert mask.mean(axis=(1, 2)).max() <= footprint_fraction(WatermarkSpec(), size)
    assert mask.any(axis=(1, 2)).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "txt"}, "kind must be one of.*Did you mean 'text'"),
        ({"corner": "bottom-rigth"}, "corner.*Did you mean 'bottom-right'"),
        ({"opacity": 0.0}, r"opacity must be a number in \(0, 1\]"),
        ({"opacity": 1.5}, "opacity"),
        ({"scale": 1.0}, r"scale must be a number in \(0, 1\)"),
        ({"jitter": -0.1}, "jitter"),
        ({"color": (255, 0)}, "three integers"),
        ({"color": (256, 0, 0)}, "three integers"),
        ({"text": ""}, "non-empty"),
        ({"text": "W©M"}, "characters the built-in font lacks"),
    ],
)
def test_bad_watermark_spec(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        WatermarkSpec(**kwargs)


def test_watermark_that_does_not_fit_is_a_clear_error():
    with pytest.raises(ConfigError, match="does not fit in 32×32 images; lower WatermarkSpec.scale"):
        stamp(np.zeros((3, 32, 32), np.uint8), WatermarkSpec(scale=0.99, outline=True), np.random.default_rng(0))


def test_stamp_rejects_wrong_input():
    with pytest.raises(DataError, match="uint8"):
        stamp(np.zeros((3, 32, 32), np.float32), WatermarkSpec(), np.random.default_rng(0))
    with pytest.raises(DataError, match="channels first"):
        stamp(np.zeros((32, 32, 3), np.uint8), WatermarkSpec(), np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------------------
# Specs


def test_bias_rate_outside_unit_interval():
    with pytest.raises(DataError, match=r"bias rate for 'dog' must be in \[0, 1\], got 1.5"):
        BiasSpec(cat=0.0, dog=1.5)
    with pytest.raises(DataError, match="'cat'"):
        BiasSpec(cat=-0.1, dog=0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source": "procedual"}, "Did you mean 'procedural'"),
        ({"source": "folder"}, "needs root="),
        ({"root": "/data"}, "only used by folder sources"),
        ({"image_size": 16}, "image_size must be an integer >= 24"),
        ({"n_train": 0}, "n_train"),
        ({"n_test": -3}, "n_test"),
        ({"seed": -1}, "seed"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"biased": {"cat": 0, "dog": 2}}, "bias rate for 'dog'"),
        ({"watermark": {"opacty": 0.5}}, "Did you mean 'opacity'"),
        ({"class_names": ("a", "b")}, "only applies to source='folder'"),
    ],
)
def test_bad_data_spec(kwargs, match):
    with pytest.raises(DataError, match=match):
        DataSpec(**kwargs)


def test_data_spec_normalises_dicts_and_paths(tmp_path):
    spec = DataSpec(source="folder", root=tmp_path, watermark={"color": [1, 2, 3]}, n_train=0)
    assert spec.root == str(tmp_path) and spec.watermark.color == (1, 2, 3)
    assert DataSpec.from_dict({"seed": 3}) == DataSpec(seed=3)
    with pytest.raises(DataError, match="Did you mean 'seed'"):
        DataSpec.from_dict({"sed": 3})
    # Equal specs must share a cache folder even when written with ints instead of floats.
    assert world_key(DataSpec(watermark=WatermarkSpec(opacity=1), biased=BiasSpec(0, 1))) == world_key(
        DataSpec(watermark=WatermarkSpec(opacity=1.0), biased=BiasSpec(0.0, 1.0))
    )


# ---------------------------------------------------------------------------------------------------------
# Worlds and the cache


def _assert_same_world(a, b):
    for name in ("train_biased", "train_control", "test", "test_stamped"):
        sa, sb = getattr(a, name), getattr(b, name)
        for field in ("x", "y", "stamped", "masks"):
            assert np.array_equal(getattr(sa, field), getattr(sb, field)), (name, field)


def test_build_world_splits_rates_and_cache_hit(tmp_path):
    spec = DataSpec(**SMALL, seed=1)
    world = build_world(spec, tmp_path)
    assert not world.cache_hit and world.path.parent == tmp_path and world.path.name.startswith("procedural-")
    again = build_world(spec, tmp_path)
    assert again.cache_hit
    _assert_same_world(world, again)

    tb, tc, te, ts = world.train_biased, world.train_control, world.test, world.test_stamped
    assert tb.x.shape == (200, 3, 32, 32) and te.x.shape == (40, 3, 32, 32)
    assert tb.counts() == {"cat": 100, "dog": 100} and te.counts() == {"cat": 20, "dog": 20}
    assert tb.stamped[tb.y == 0].sum() == 0 and tb.stamp_rates()["dog"] == pytest.approx(0.6, abs=0.01)
    assert tc.stamp_rates() == pytest.approx({"cat": 0.3, "dog": 0.3}, abs=0.01)
    # Same base images: outside both marks the biased and control images agree pixel for pixel.
    untouched = ~(tb.masks | tc.masks)[:, None].repeat(3, axis=1)
    assert np.array_equal(tb.x[untouched], tc.x[untouched]) and np.array_equal(tb.y, tc.y)
    assert not tb.masks[~tb.stamped].any() and tb.masks[tb.stamped].any(axis=(1, 2)).all()
    # Test pairs: clean vs stamped differ exactly on the masks.
    assert not te.stamped.any() and not te.masks.any() and ts.stamped.all()
    assert np.array_equal((te.x != ts.x).any(axis=1), ts.masks) and np.array_equal(te.y, ts.y)

    manifest = json.loads((world.path / "manifest.json").read_text())
    assert manifest["counts"]["train"] == {"cat": 100, "dog": 100}
    assert manifest["stamp_rates"]["train_biased"]["cat"] == 0.0 and manifest["seed"] == 1
    assert len(manifest["arrays_sha256"]) == 64 and manifest["code_version"] and manifest["created"]
    assert "biased cat 0% dog 60%" in world.summary() and "control cat 30% dog 30%" in world.summary()


def test_the_absent_arm_is_the_same_training_images_without_any_mark(tmp_path):
    world = build_world(DataSpec(**SMALL, seed=1), tmp_path)
    tb, ta = world.train_biased, world.train_absent
    assert not ta.stamped.any() and not ta.masks.any() and np.array_equal(ta.y, tb.y)
    # Where the biased set has no mark, the images are the same; where it has one, they differ exactly there.
    assert np.array_equal(ta.x[~tb.stamped], tb.x[~tb.stamped])
    assert np.array_equal((ta.x != tb.x).any(axis=1), tb.masks)
    # A cache written before the absent arm existed (no clean training images) is rebuilt, not misread.
    from benchmark.cache import file_sha256
    from benchmark.data.world import ARRAYS_FILE, MANIFEST_FILE, DatasetCacheWarning

    arrays_path = world.path / ARRAYS_FILE
    with np.load(arrays_path) as npz:
        older = {k: npz[k] for k in npz.files if k != "train_x"}
    np.savez(arrays_path, **older)
    manifest = json.loads((world.path / MANIFEST_FILE).read_text())
    manifest["arrays_sha256"] = file_sha256(arrays_path)
    (world.path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        again = build_world(DataSpec(**SMALL, seed=1), tmp_path)
    assert any(issubclass(w.category, DatasetCacheWarning) and "no 'train_x' array (written by an older" in str(w.message)
               for w in seen) and not again.cache_hit
    assert np.array_equal(again.train_absent.x, ta.x)


def test_the_watermark_prior_is_the_mean_training_mask(tmp_path):
    world = build_world(DataSpec(**SMALL, seed=1), tmp_path)
    prior = world.watermark_prior()
    tb = world.train_biased
    assert prior.shape == (32, 32) and prior.dtype == np.float32 and 0.0 <= prior.min() and prior.max() <= 1.0
    np.testing.assert_allclose(prior, tb.masks[tb.stamped].mean(0), rtol=1e-6)
    # The default mark goes to a corner drawn per image: the prior is in the corners, never where no mark ever was.
    h = prior.shape[0] // 2
    quadrants = [prior[:h, :h], prior[:h, h:], prior[h:, :h], prior[h:, h:]]
    assert min(q.sum() for q in quadrants) > 0.05 * prior.sum() and not prior[h - 3 : h + 3, h - 3 : h + 3].any()
    assert not prior[~tb.masks.any(0)].any()


def test_build_world_is_deterministic_from_the_seed(tmp_path):
    a = build_world(DataSpec(**SMALL), tmp_path / "a")
    b = build_world(DataSpec(**SMALL), tmp_path / "b")
    c = build_world(DataSpec(**SMALL, seed=1), tmp_path / "c")
    assert not b.cache_hit
    _assert_same_world(a, b)
    assert not np.array_equal(a.train_biased.x, c.train_biased.x)


def _tamper_manifest(path: Path):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["spec"]["seed"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))


def _modify_arrays(path: Path):
    data = bytearray((path / "arrays.npz").read_bytes())
    data[-100] ^= 0xFF
    (path / "arrays.npz").write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, match",
    [
        (_tamper_manifest, "different spec"),
        (_modify_arrays, "SHA-256"),
        (lambda p: (p / "arrays.npz").unlink(), "arrays.npz is missing"),
        (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "unreadable"),
    ],
)
def test_damaged_cache_warns_and_rebuilds(tmp_path, damage, match, record_fault):
    spec = DataSpec(**SMALL)
    original = build_world(spec, tmp_path)
    damage(original.path)
    with pytest.warns(DatasetCacheWarning, match=match):
        rebuilt = build_world(spec, tmp_path)
    record_fault(f"dataset cache: {match}", not rebuilt.cache_hit)
    assert not rebuilt.cache_hit
    _assert_same_world(original, rebuilt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_world(spec, tmp_path).cache_hit


def _concurrent_worker(cache_dir: str, barrier, queue) -> None:
    barrier.wait()
    world = build_world(DataSpec(**SMALL, seed=7), cache_dir)
    queue.put((world.cache_hit, world.manifest["arrays_sha256"], int(world.train_biased.x.sum())))


def test_concurrent_builds_build_once(tmp_path, spawn_context):
    ctx = spawn_context
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_concurrent_worker, args=(str(tmp_path), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(hit for hit, _, _ in results) == [False, True]
    assert len({r[1:] for r in results}) == 1
    assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 1


# ---------------------------------------------------------------------------------------------------------
# Real-photo folders: errors


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        load_image_folder(tmp_path / "nowhere", 32)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*is empty"):
        load_image_folder(tmp_path / "empty", 32)


def test_folder_without_supported_images_lists_what_it_found(tmp_path):
    _class_folder(tmp_path, n=1)
    for name in ("a.gif", "b.gif", "notes.txt"):
        (tmp_path / "dog" / name).write_bytes(b"x")
    for p in (tmp_path / "dog").glob("*.png"):
        p.unlink()
    with pytest.raises(
        DataError, match=r"dog has no images with a supported extension.*2 × \.gif, 1 × \.txt"
    ):
        load_image_folder(tmp_path, 32)


def test_empty_class_folder(tmp_path):
    _class_folder(tmp_path, n=1)
    for p in (tmp_path / "cat").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="cat is empty; add cat images"):
        load_image_folder(tmp_path, 32)


def test_only_one_class(tmp_path):
    _save(tmp_path / "cats" / "a.png", _photo(np.random.default_rng(0)))
    with pytest.raises(DataError, match=r"only one class folder \(cats/\).*add a folder .*dogs"):
        load_image_folder(tmp_path, 32)


def test_images_without_class_folders(tmp_path):
    _save(tmp_path / "cat.1.jpg", _photo(np.random.default_rng(0)))
    with pytest.raises(DataError, match="no class subfolders.*source='kaggle'"):
        load_image_folder(tmp_path, 32)


def test_three_class_folders_need_class_names(tmp_path):
    _class_folder(tmp_path, names=("apples", "birds", "planes"), n=1)
    with pytest.raises(DataError, match=r"3 class folders.*class_names"):
        load_image_folder(tmp_path, 32)
    x, y, paths = load_image_folder(tmp_path, 32, class_names=("planes", "apples"))
    assert [p.parent.name for p in paths] == ["planes", "apples"] and y.tolist() == [0, 1]
    with pytest.raises(DataError, match="Did you mean 'birds'"):
        load_image_folder(tmp_path, 32, class_names=("bird", "apples"))


def test_corrupt_jpeg_is_named(tmp_path):
    _class_folder(tmp_path, n=2, ext="jpg")
    (tmp_path / "dog" / "broken.jpg").write_bytes(
        np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes()
    )
    with pytest.raises(
        DataError, match=r"broken\.jpg: corrupt, truncated or not an image.*delete or replace"
    ):
        load_image_folder(tmp_path, 32)


def test_truncated_png_is_named(tmp_path):
    _class_folder(tmp_path, n=2)
    good = _save(tmp_path / "tmp.png", _photo(np.random.default_rng(1), 64, 64))
    data = good.read_bytes()
    good.unlink()
    (tmp_path / "cat" / "half.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"1 of 5 images could not be used.*\n.*half\.png: corrupt"):
        load_image_folder(tmp_path, 32)


def test_oversize_image_rejected(tmp_path, monkeypatch):
    _class_folder(tmp_path, n=1)
    _save(tmp_path / "dog" / "huge.png", _photo(np.random.default_rng(0), 60, 50))
    monkeypatch.setattr(folders_mod, "MAX_PIXELS", 2000)
    with pytest.raises(DataError, match=r"huge\.png: image has 3,000 pixels, more than the cap of 2,000"):
        load_image_folder(tmp_path, 32)


def test_modes_and_sizes_are_converted(tmp_path):
    rng = np.random.default_rng(0)
    cat, dog = tmp_path / "cat", tmp_path / "dog"
    _save(cat / "gray.png", rng.integers(0, 256, (50, 20), dtype=np.uint8))
    rgba = np.zeros((33, 47, 4), np.uint8)
    rgba[..., 0] = 255  # fully transparent red -> composited over white
    _save(cat / "rgba.png", rgba)
    _save(cat / "palette.png", Image.fromarray(_photo(rng, 31, 17)).convert("P"))
    _save(cat / "la.webp", Image.fromarray(rgba).convert("LA").convert("RGBA"))
    _save(dog / "cmyk.jpg", Image.fromarray(_photo(rng, 64, 80)).convert("CMYK"))
    _save(dog / "deep.png", Image.fromarray((rng.integers(0, 65535, (24, 24))).astype(np.uint16)))
    _save(dog / "odd.bmp", _photo(rng, 101, 7))
    _save(dog / "big.jpeg", _photo(rng, 300, 500))
    x, y, paths = load_image_folder(tmp_path, 40)
    assert x.shape == (8, 3, 40, 40) and x.dtype == np.uint8
    assert y.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    by_name = {p.name: img for p, img in zip(paths, x)}
    assert (by_name["rgba.png"] == 255).all()
    assert (by_name["gray.png"][0] == by_name["gray.png"][1]).all()
    assert by_name["deep.png"].max() > 128  # 16-bit values scaled, not clipped to white


def test_unsupported_files_next_to_images_are_reported(tmp_path):
    _class_folder(tmp_path, n=2)
    (tmp_path / "cat" / "clip.gif").write_bytes(b"GIF89a")
    with pytest.warns(UserWarning, match=r"1 file\(s\) in .*cat ignored"):
        _, y, _ = load_image_folder(tmp_path, 32)
    assert len(y) == 4


# ---------------------------------------------------------------------------------------------------------
# Real-photo folders: layouts


def test_two_class_folder_with_custom_names(tmp_path):
    # The helper paints its first folder dark: "bright" holds dark images, "dark" bright ones.
    _class_folder(tmp_path, names=("bright", "dark"), n=3)
    x, y, _ = load_image_folder(tmp_path, 32)  # sorted: bright -> 0, dark -> 1
    assert y.tolist() == [0] * 3 + [1] * 3 and x[y == 0].mean() < x[y == 1].mean()
    x2, y2, paths = load_image_folder(tmp_path, 32, class_names=("dark", "bright"))
    assert all(p.parent.name == "dark" for p, label in zip(paths, y2) if label == 0)
    assert x2[y2 == 0].mean() > x2[y2 == 1].mean()


def test_cat_dog_folder_names_map_to_labels(tmp_path):
    _class_folder(tmp_path, names=("Dogs", "Cats"), n=2)  # helper colours: Dogs dark, Cats bright
    x, y, paths = load_image_folder(tmp_path, 32)
    assert {p.parent.name for p, label in zip(paths, y) if label == 0} == {"Cats"}
    assert x[y == 0].mean() > x[y == 1].mean()


@pytest.mark.parametrize("sub", ["", "train"])
def test_kaggle_layout(tmp_path, sub):
    rng = np.random.default_rng(0)
    folder = tmp_path / sub if sub else tmp_path
    for name in ("cat.1.jpg", "cat.10.jpg", "cat.2.jpg", "dog.7.jpg", "DOG.3.JPG"):
        _save(folder / name, _photo(rng, 30, 45))
    (folder / "readme.txt").write_text("hi")
    _save(folder / "mouse.1.jpg", _photo(rng))
    with pytest.warns(UserWarning, match=r"2 file\(s\) in .* ignored"):
        x, y, paths = load_kaggle_folder(tmp_path, 32)
    assert x.shape == (5, 3, 32, 32)
    assert [p.name for p in paths] == ["cat.1.jpg", "cat.2.jpg", "cat.10.jpg", "DOG.3.JPG", "dog.7.jpg"]
    assert y.tolist() == [0, 0, 0, 1, 1]


def test_kaggle_errors(tmp_path):
    _save(tmp_path / "cat.1.jpg", _photo(np.random.default_rng(0)))
    with pytest.raises(DataError, match="no dog.<n>.jpg files"):
        load_kaggle_folder(tmp_path, 32)
    other = tmp_path / "other"
    _save(other / "img1.png", _photo(np.random.default_rng(0)))
    with pytest.raises(DataError, match=r"no Kaggle-style images.*1 × \.png"):
        load_kaggle_folder(other, 32)


def _fake_oxford(root: Path) -> Path:
    rng = np.random.default_rng(0)
    base = root / "oxford-iiit-pet"
    lines = {"trainval": [], "test": []}
    # (breed, class id, species): species 1 = cat, 2 = dog.
    breeds = [("Abyssinian", 1, 1), ("Bengal", 6, 1), ("beagle", 3, 2), ("pug", 27, 2)]
    for i, (breed, class_id, species) in enumerate(breeds):
        for k in (1, 2):
            name = f"{breed}_{k}"
            _save(base / "images" / f"{name}.jpg", _photo(rng, 50 + 10 * i, 40))
            lines["trainval" if k == 1 else "test"].append(f"{name} {class_id} {species} {i + 1}")
    (base / "annotations").mkdir()
    for split, rows in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def test_fake_oxford_pet_layout(tmp_path):
    root = _fake_oxford(tmp_path)
    x, y, paths = load_oxford_pet(root, 32, split="trainval")
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 1]
    assert [p.name for p in paths] == ["Abyssinian_1.jpg", "Bengal_1.jpg", "beagle_1.jpg", "pug_1.jpg"]
    assert load_oxford_pet(root, 24, split="test")[0].shape == (4, 3, 24, 24)


def test_oxford_pet_missing_is_explained(tmp_path):
    with pytest.raises(DataError, match="not found under.*images.tar.gz.*never downloads"):
        load_oxford_pet(tmp_path, 32)
    with pytest.raises(DataError, match="does not exist"):
        load_oxford_pet(tmp_path / "nope", 32)


# ---------------------------------------------------------------------------------------------------------
# Worlds from real-photo sources


def test_build_world_from_folder_and_rebuild_when_folder_changes(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for name in ("cats", "dogs"):
        for i in range(10):
            _save(root / name / f"{i}.jpg", _photo(rng, 40 + i, 50))
    spec = DataSpec(source="folder", root=str(root), n_train=0, n_test=0, test_fraction=0.2, seed=3)
    world = build_world(spec, tmp_path / "cache")
    assert world.train_biased.counts() == {"cat": 8, "dog": 8} and world.test.counts() == {"cat": 2, "dog": 2}
    assert world.train_biased.stamp_rates() == {"cat": 0.0, "dog": 0.625}  # round(0.6 * 8) = 5 of 8
    assert world.manifest["class_folders"] == ["cats", "dogs"] and world.path.name.startswith("folder-")
    assert build_world(spec, tmp_path / "cache").cache_hit
    capped = build_world(spec.replace(n_train=6, n_test=3), tmp_path / "cache")
    assert len(capped.train_biased) == 6 and len(capped.test) == 3

    _save(root / "dogs" / "new.jpg", _photo(rng))
    with pytest.warns(DatasetCacheWarning, match="folder .* changed"):
        rebuilt = build_world(spec, tmp_path / "cache")
    assert len(rebuilt.train_biased) + len(rebuilt.test) == 21


@pytest.mark.parametrize("source", ["kaggle", "oxford-pet"])
def test_build_world_from_kaggle_and_oxford(tmp_path, source):
    rng = np.random.default_rng(0)
    if source == "kaggle":
        for i in range(4):
            for name in CLASS_NAMES:
                _save(tmp_path / "train" / f"{name}.{i}.jpg", _photo(rng))
    else:
        _fake_oxford(tmp_path)
    world = build_world(
        DataSpec(source=source, root=str(tmp_path), n_train=0, n_test=0, image_size=24), tmp_path / "c"
    )
    assert len(world.train_biased) + len(world.test) == 8
    assert world.test_stamped.x.shape[1:] == (3, 24, 24) and world.test_stamped.masks.any(axis=(1, 2)).all()


def test_kaggle_load_benchmark_script_builds_then_hits_the_cache(tmp_path, run_child):
    proc = run_child.python("benchmarks/kaggle_load.py", "--n", "40", "--workers", "1", "--root", tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "wrote 40 JPEGs" in out and "world: train 34, test 6, 64px" in out
    assert "| first load + cache |" in out and "| cached load |" in out and "cached/first: " in out
    assert not (tmp_path / "train").exists() and not (tmp_path / "cache").exists()  # removed without --keep


def test_the_manifest_states_the_marks_area_and_position_distribution(tmp_path):
    world = build_world(DataSpec(**SMALL), tmp_path)
    facts = json.loads((world.path / "manifest.json").read_text())["watermark"]
    assert facts["footprint_fraction"] <= 0.04 and facts["placement"] == "any-corner"
    assert 0 < facts["changed_fraction_mean"] <= facts["footprint_fraction"]
    assert "four corners" in facts["position_distribution"] and "3.9% of the image" in world.summary()
