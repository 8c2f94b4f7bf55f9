"""The benchmark's data "world": biased and control training sets, clean and stamped test sets, cached on disk.

``build_world(spec)`` draws (or loads) base images, splits them, and stamps the watermark:

* ``train_biased``: the training images, with the mark on a ``spec.biased`` fraction of each class
  (default: no cat, 60% of dogs, as in the original shortcut study);
* ``train_control``: the *same* training images, stamped per ``spec.control`` (default 30% of each class:
  about as many marks, but no label information), to train the model that must not use the mark;
* ``train_absent``: the *same* training images with no mark at all, to train the model that never saw one
  (with the control it separates "the method finds the mark because the model uses it" from "because it is
  salient");
* ``test``: clean test images; ``test_stamped``: the same test images, every one stamped (pairs by index).

Per-class stamp counts are exact (``round(rate × class size)``), chosen at random. Everything is
deterministic from ``spec.seed``. A world is built once per spec and cached under
``<cache_dir>/<source>-<hash>/`` (``arrays.npz`` then ``manifest.json``; the manifest's presence marks a
complete build); a cross-process lock makes concurrent callers build it once. A cache whose manifest is
missing or differs, whose arrays fail the recorded SHA-256, or whose source folder changed is reported
with a warning and rebuilt, never used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.cache import CODE_VERSION, atomic_path, atomic_write_json, file_sha256, lock_for, stable_hash
from benchmark.data.folders import list_image_folder, list_kaggle_folder, list_oxford_pet, load_images
from benchmark.data.procedural import CLASS_NAMES, MIN_IMAGE_SIZE, generate_procedural
from benchmark.data.watermark import WatermarkSpec, footprint_fraction, mark_size, stamp
from benchmark.errors import DataError, did_you_mean

SOURCES = ("procedural", "folder", "kaggle", "oxford-pet")
ARRAYS_FILE = "arrays.npz"
MANIFEST_FILE = "manifest.json"


class DatasetCacheWarning(UserWarning):
    """A cached dataset was unusable (missing file, tampered manifest, hash mismatch) and is being rebuilt."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class BiasSpec:
    """Per-class probability that a training image carries the watermark."""

    cat: float
    dog: float

    def __post_init__(self):
        for name in CLASS_NAMES:
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
                raise DataError(f"bias rate for {name!r} must be in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))

    def rate(self, label: int) -> float:
        """Stamp rate of class ``label`` (0 cat, 1 dog)."""
        return getattr(self, CLASS_NAMES[label])


BIASED = BiasSpec(cat=0.0, dog=0.6)
CONTROL = BiasSpec(cat=0.3, dog=0.3)


def _coerce(value: Any, cls: type, name: str):
    """Accept a dict (e.g. parsed from JSON/YAML) where a nested spec is expected."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise DataError(
                f"unknown {name} option(s) {unknown}; valid: {sorted(known)}.{did_you_mean(unknown[0], known)}"
            )
        return cls(**value)
    raise DataError(f"{name} must be a {cls.__name__} or a dict of its fields, got {type(value).__name__}")


@dataclass(frozen=True)
class DataSpec:
    """Everything that determines a world: image source, size, counts, seed, watermark and stamp rates."""

    source: str = "procedural"
    root: str | None = None  # folder sources only
    image_size: int = 32
    # Exact counts for "procedural"; for folder sources caps (0 = all) applied after the test_fraction split.
    n_train: int = 6000
    n_test: int = 1000
    seed: int = 0
    watermark: WatermarkSpec = WatermarkSpec()
    biased: BiasSpec = BIASED
    control: BiasSpec = CONTROL
    test_fraction: float = 0.15  # folder sources: share of each class held out for testing
    class_names: tuple[str, str] | None = None  # source "folder": (label-0 folder, label-1 folder)

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise fields in place so equal specs hash equally
        if self.source not in SOURCES:
            raise DataError(
                f"unknown data source {self.source!r}; choose one of {SOURCES}.{did_you_mean(str(self.source), SOURCES)}"
            )
        procedural = self.source == "procedural"
        if isinstance(self.root, os.PathLike):
            set_(self, "root", os.fspath(self.root))
        if procedural and self.root is not None:
            raise DataError(
                f"root={self.root!r} is only used by folder sources; drop it, or set source to one of {SOURCES[1:]}"
            )
        if not procedural and (not isinstance(self.root, str) or not self.root):
            raise DataError(
                f"source {self.source!r} needs root= pointing at the image folder (see datasets/README.md)"
            )
        if not _is_int(self.image_size) or self.image_size < MIN_IMAGE_SIZE:
            raise DataError(
                f"image_size must be an integer >= {MIN_IMAGE_SIZE} (the mark is unreadable below), got {self.image_size!r}"
            )
        low = 2 if procedural else 0
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                what = "at least 2 (one image per class)" if procedural else "0 (use all) or a positive cap"
                raise DataError(f"{name} must be an integer, {what}; got {value!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not _is_number(self.test_fraction) or not 0.0 < self.test_fraction < 1.0:
            raise DataError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        for name in ("image_size", "n_train", "n_test", "seed"):
            set_(self, name, int(getattr(self, name)))
        set_(self, "test_fraction", float(self.test_fraction))
        set_(self, "watermark", _coerce(self.watermark, WatermarkSpec, "watermark"))
        set_(self, "biased", _coerce(self.biased, BiasSpec, "biased"))
        set_(self, "control", _coerce(self.control, BiasSpec, "control"))
        if self.class_names is not None:
            names = self.class_names
            if self.source != "folder":
                raise DataError(f"class_names only applies to source='folder', not {self.source!r}; drop it")
            if (
                isinstance(names, str)
                or len(names) != 2
                or not all(isinstance(n, str) and n for n in names)
                or names[0] == names[1]
            ):
                raise DataError(
                    f"class_names must be two different folder names (label 0, label 1), got {names!r}"
                )
            set_(self, "class_names", (names[0], names[1]))

    def replace(self, **changes) -> DataSpec:
        """Copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, options: dict) -> DataSpec:
        """Build from a plain dict (e.g. a profile file), rejecting unknown keys with a suggestion."""
        return _coerce(dict(options), cls, "data")


@dataclass
class Split:
    """Images (uint8 N×3×H×W), labels (int64 N), which images carry the mark (bool N) and its pixels (bool N×H×W)."""

    x: np.ndarray
    y: np.ndarray
    stamped: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def counts(self) -> dict[str, int]:
        """Number of images per class name."""
        return {name: int((self.y == label).sum()) for label, name in enumerate(CLASS_NAMES)}

    def stamp_rates(self) -> dict[str, float]:
        """Realised fraction of stamped images per class name (0.0 for an absent class)."""
        return {
            name: float(self.stamped[self.y == label].mean()) if (self.y == label).any() else 0.0
            for label, name in enumerate(CLASS_NAMES)
        }


@dataclass
class World:
    """A built or cached world: the spec, its cache key and folder, the four splits and the manifest."""

    spec: DataSpec
    key: str
    path: Path
    train_biased: Split
    train_control: Split
    train_absent: Split
    test: Split
    test_stamped: Split
    manifest: dict = field(repr=False)
    cache_hit: bool = False

    def watermark_prior(self) -> np.ndarray:
        """(H, W) float32: the mean watermark mask over the stamped training images of the biased set (where marks
        usually are, learnable from the training data without seeing any test image)."""
        s = self.train_biased
        if not s.stamped.any():
            return np.zeros(s.masks.shape[1:], dtype=np.float32)
        return s.masks[s.stamped].mean(axis=0, dtype=np.float64).astype(np.float32)

    def summary(self) -> str:
        """One line: source, size, counts per class, realised stamp rates."""

        def pct(rates: dict[str, float]) -> str:
            return " ".join(f"{k} {100 * v:.0f}%" for k, v in rates.items())

        tr, te = self.train_biased.counts(), self.test.counts()
        return (
            f"{self.spec.source} {self.spec.image_size}px seed {self.spec.seed}: "
            f"train {len(self.train_biased)} (cat {tr['cat']}, dog {tr['dog']}), "
            f"test {len(self.test)} (cat {te['cat']}, dog {te['dog']}); stamped: "
            f"biased {pct(self.train_biased.stamp_rates())}, control {pct(self.train_control.stamp_rates())}, "
            f"test_stamped {pct(self.test_stamped.stamp_rates())}; {self.mark_line()}"
        )

    def mark_line(self) -> str:
        """The mark in words, e.g. "mark 8×5 px (3.9% of the image), opacity 1, at any-corner"."""
        facts = self.manifest.get("watermark") or watermark_facts(self.spec, self.test_stamped.masks)
        h, w = facts["footprint_px"]
        return (f"mark {w}×{h} px ({facts['footprint_fraction']:.1%} of the image), opacity {facts['opacity']:g}, "
                f"at {facts['placement']}")


def world_key(spec: DataSpec) -> str:
    """Cache key of a spec: hash of the spec and the data code version."""
    return stable_hash({"spec": spec, "code_version": CODE_VERSION})


def _spec_json(spec: DataSpec) -> Any:
    # The manifest stores JSON, where tuples come back as lists: compare in that form.
    return json.loads(json.dumps(dataclasses.asdict(spec)))


# ---------------------------------------------------------------------------------------------------------
# Building


def _streams(seed: int) -> dict[str, np.random.Generator]:
    names = ("train_images", "test_images", "split", "biased", "control", "test_stamped")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def _list_source(spec: DataSpec) -> tuple[list[Path], np.ndarray, list[str]]:
    """All image paths and labels of a folder source, plus the folder names used as classes."""
    if spec.source == "folder":
        paths, labels, names = list_image_folder(spec.root, spec.class_names)
        return paths, labels, list(names)
    if spec.source == "kaggle":
        paths, labels = list_kaggle_folder(spec.root)
        return paths, labels, list(CLASS_NAMES)
    # Oxford-IIIT Pet's official trainval/test split is pooled and re-split like every other folder.
    p1, l1 = list_oxford_pet(spec.root, "trainval")
    p2, l2 = list_oxford_pet(spec.root, "test")
    return p1 + p2, np.concatenate([l1, l2]), list(CLASS_NAMES)


def _fingerprint(paths: list[Path]) -> str:
    """Hash of the listed files' names, sizes and modification times: changes when the folder changes."""
    entries = []
    for p in paths:
        try:
            st = p.stat()
            entries.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            entries.append((str(p), -1, -1))
    return stable_hash(entries)


def _split_folder(
    spec: DataSpec, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class random hold-out of ``test_fraction``, then the n_train / n_test caps."""
    train, test = [], []
    for label, name in enumerate(CLASS_NAMES):
        idx = rng.permutation(np.flatnonzero(labels == label))
        if len(idx) < 2:
            raise DataError(
                f"class {name!r} has {len(idx)} image(s) in {spec.root}; at least 2 are needed (one to train, one to test)"
            )
        k = min(max(1, int(round(spec.test_fraction * len(idx)))), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    if spec.n_train:
        train_idx = train_idx[: spec.n_train]
    if spec.n_test:
        test_idx = test_idx[: spec.n_test]
    return train_idx, test_idx


def _stamp_split(x: np.ndarray, y: np.ndarray, bias: BiasSpec | None, spec: DataSpec, rng) -> Split:
    """Stamp exactly round(rate × class size) random images of each class (all of them when bias is None)."""
    stamped = np.zeros(len(y), dtype=bool)
    for label in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(y == label)
        k = len(idx) if bias is None else int(round(bias.rate(label) * len(idx)))
        stamped[rng.permutation(idx)[:k]] = True
    out = x.copy()
    masks = np.zeros((len(y), x.shape[2], x.shape[3]), dtype=bool)
    if stamped.any():
        out[stamped], masks[stamped] = stamp(x[stamped], spec.watermark, rng)
    return Split(out, y.copy(), stamped, masks)


def _build_arrays(spec: DataSpec) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    rng = _streams(spec.seed)
    info: dict[str, Any] = {"class_names": list(CLASS_NAMES)}
    if spec.source == "procedural":

        def seed_of(g: np.random.Generator) -> int:
            return int(g.integers(0, 2**62))

        x_train, y_train = generate_procedural(spec.n_train, spec.image_size, seed_of(rng["train_images"]))
        x_test, y_test = generate_procedural(spec.n_test, spec.image_size, seed_of(rng["test_images"]))
    else:
        paths, labels, folders = _list_source(spec)
        info["class_folders"] = folders
        info["source_fingerprint"] = _fingerprint(paths)
        info["source_files"] = len(paths)
        train_idx, test_idx = _split_folder(spec, labels, rng["split"])
        # One decode pass for both splits, so a single error lists every unusable file.
        x_all = load_images([paths[i] for i in np.concatenate([train_idx, test_idx])], spec.image_size)
        x_train, x_test = x_all[: len(train_idx)], x_all[len(train_idx) :]
        y_train, y_test = labels[train_idx], labels[test_idx]

    biased = _stamp_split(x_train, y_train, spec.biased, spec, rng["biased"])
    control = _stamp_split(x_train, y_train, spec.control, spec, rng["control"])
    stamped_test = _stamp_split(x_test, y_test, None, spec, rng["test_stamped"])
    arrays = {
        "train_y": y_train,
        "train_x": x_train,
        "train_biased_x": biased.x,
        "train_biased_stamped": biased.stamped,
        "train_biased_masks": biased.masks,
        "train_control_x": control.x,
        "train_control_stamped": control.stamped,
        "train_control_masks": control.masks,
        "test_x": x_test,
        "test_y": y_test,
        "test_stamped_x": stamped_test.x,
        "test_stamped_masks": stamped_test.masks,
    }
    return arrays, info


def _splits(arrays: dict[str, np.ndarray]) -> dict[str, Split]:
    y_train, y_test, x_test = arrays["train_y"], arrays["test_y"], arrays["test_x"]
    n_test, _, h, w = x_test.shape
    n_train = len(y_train)
    return {
        "train_biased": Split(
            arrays["train_biased_x"], y_train, arrays["train_biased_stamped"], arrays["train_biased_masks"]
        ),
        "train_control": Split(
            arrays["train_control_x"],
            y_train.copy(),
            arrays["train_control_stamped"],
            arrays["train_control_masks"],
        ),
        "train_absent": Split(arrays["train_x"], y_train.copy(), np.zeros(n_train, dtype=bool),
                              np.zeros((n_train, h, w), dtype=bool)),
        "test": Split(x_test, y_test, np.zeros(n_test, dtype=bool), np.zeros((n_test, h, w), dtype=bool)),
        "test_stamped": Split(
            arrays["test_stamped_x"], y_test.copy(), np.ones(n_test, dtype=bool), arrays["test_stamped_masks"]
        ),
    }


def watermark_facts(spec: DataSpec, masks: np.ndarray) -> dict[str, Any]:
    """How big the mark is and where it goes: footprint, pixels it changed on the stamped test set, placement."""
    wm = spec.watermark
    h, w = mark_size(wm, spec.image_size, spec.image_size)
    changed = masks.mean(axis=(1, 2)) if len(masks) else np.zeros(1)
    where = {
        "any-corner": "one of the four corners, drawn uniformly per image, moved inwards by a uniform jitter",
        "anywhere": "a uniform position anywhere in the image (it may cover the animal)",
    }.get(wm.corner, f"the {wm.corner} corner, moved inwards by a uniform jitter")
    return {
        "footprint_px": [h, w],
        "footprint_fraction": round(footprint_fraction(wm, spec.image_size), 5),
        "changed_fraction_mean": round(float(changed.mean()), 5),
        "changed_fraction_max": round(float(changed.max()), 5),
        "placement": wm.corner,
        "position_distribution": f"{where} (jitter up to {wm.jitter:.0%} of the side)"
        if wm.corner != "anywhere" else where,
        "opacity": wm.opacity,
    }


def _manifest(spec: DataSpec, key: str, splits: dict[str, Split], info: dict, sha: str) -> dict[str, Any]:
    return {
        "key": key,
        "spec": _spec_json(spec),
        "seed": spec.seed,
        "code_version": CODE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "arrays_file": ARRAYS_FILE,
        "arrays_sha256": sha,
        "image_size": spec.image_size,
        "counts": {"train": splits["train_biased"].counts(), "test": splits["test"].counts()},
        "stamp_rates": {
            name: splits[name].stamp_rates() for name in ("train_biased", "train_control", "test_stamped")
        },
        "watermark": watermark_facts(spec, splits["test_stamped"].masks),
        **info,
    }


# ---------------------------------------------------------------------------------------------------------
# Cache


def _load_cached(spec: DataSpec, key: str, path: Path) -> tuple[World | None, str]:
    """(world, "") if the cache at ``path`` is complete and intact, else (None, what is wrong)."""
    manifest_path, arrays_path = path / MANIFEST_FILE, path / ARRAYS_FILE
    if not manifest_path.is_file():
        return None, f"{MANIFEST_FILE} is missing (an interrupted or deleted build)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"{MANIFEST_FILE} is unreadable ({exc})"
    if not isinstance(manifest, dict):
        return None, f"{MANIFEST_FILE} is not a JSON object"
    if manifest.get("spec") != _spec_json(spec):
        return None, f"{MANIFEST_FILE} records a different spec than the one requested"
    if manifest.get("code_version") != CODE_VERSION or manifest.get("key") != key:
        return None, f"{MANIFEST_FILE} records another code version or key"
    if not arrays_path.is_file():
        return None, f"{ARRAYS_FILE} is missing"
    if file_sha256(arrays_path) != manifest.get("arrays_sha256"):
        return None, f"{ARRAYS_FILE} does not match the SHA-256 in {MANIFEST_FILE} (modified or truncated)"
    if spec.source != "procedural":
        paths, _, _ = _list_source(spec)
        if _fingerprint(paths) != manifest.get("source_fingerprint"):
            return None, f"the image folder {spec.root} changed since the cache was built"
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        splits = _splits(arrays)
    except KeyError as exc:
        return None, f"{ARRAYS_FILE} has no {exc} array (written by an older shortcut-bench)"
    except (OSError, ValueError) as exc:
        return None, f"{ARRAYS_FILE} is unreadable ({exc})"
    return World(spec, key, path, manifest=manifest, cache_hit=True, **splits), ""


def build_world(spec: DataSpec | dict, cache_dir: Path | str = "datasets") -> World:
    """Build (or load from ``cache_dir``) the biased/control/test splits for ``spec``, deterministically."""
    if isinstance(spec, dict):
        spec = DataSpec.from_dict(spec)
    if not isinstance(spec, DataSpec):
        raise DataError(f"build_world needs a DataSpec (or a dict of its fields), got {type(spec).__name__}")
    key = world_key(spec)
    path = Path(cache_dir) / f"{spec.source}-{key}"
    with lock_for(path):
        if path.exists():
            world, problem = _load_cached(spec, key, path)
            if world is not None:
                return world
            warnings.warn(
                f"dataset cache {path} is unusable: {problem}; rebuilding it",
                DatasetCacheWarning,
                stacklevel=2,
            )
        arrays, info = _build_arrays(spec)
        path.mkdir(parents=True, exist_ok=True)
        # Remove the old manifest first: until the new one is written the folder counts as incomplete.
        (path / MANIFEST_FILE).unlink(missing_ok=True)
        with atomic_path(path / ARRAYS_FILE) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        splits = _splits(arrays)
        manifest = _manifest(spec, key, splits, info, file_sha256(path / ARRAYS_FILE))
        atomic_write_json(path / MANIFEST_FILE, manifest)
        return World(spec, key, path, manifest=manifest, cache_hit=False, **splits)
