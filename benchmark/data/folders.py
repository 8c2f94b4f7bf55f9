"""Load real two-class photo collections (class folders, Kaggle Dogs-vs-Cats, Oxford-IIIT Pet) as uint8 arrays.

Conversion policy, applied to every image:

* Colour: grayscale, 1-bit, palette, CMYK and YCbCr images are converted to RGB; images with an alpha
  channel (RGBA, LA, palette with transparency) are composited over white; 16-bit grayscale is scaled to
  8 bits. EXIF orientation is applied (a broken EXIF block is ignored, not fatal).
* Geometry: any size or aspect is centre-cropped to a square and resized to ``image_size`` × ``image_size``
  with PIL's bilinear filter, which antialiases when shrinking. JPEGs are decoded at the smallest DCT scale
  that is still at least ``image_size`` on both sides (``Image.draft``), which is much faster.
* Size cap: images with more than ``MAX_PIXELS`` pixels (40 megapixels) are rejected, as are images PIL
  flags as decompression bombs.
* Corrupt or truncated files are never patched up (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False): every
  unusable file is collected and one DataError names them all, so they can be deleted or replaced at once.

Labels: 0 = cat, 1 = dog (the shortcut class). Files are returned in sorted order, so loading is
deterministic.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from benchmark.data.procedural import CLASS_NAMES
from benchmark.errors import DataError, did_you_mean

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_PIXELS = 40_000_000
CAT_FOLDER_NAMES = ("cat", "cats")
DOG_FOLDER_NAMES = ("dog", "dogs")
KAGGLE_PATTERN = re.compile(r"^(cat|dog)\.(\d+)\.(jpe?g|png|bmp|webp)$", re.IGNORECASE)
OXFORD_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/"

# How many bad files one error message lists before summarising the rest.
_MAX_LISTED = 10


# ---------------------------------------------------------------------------------------------------------
# Decoding one image


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    # PIL's flag is process-global; force it off while we decode and restore the caller's setting after.
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB following the module's conversion policy."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        # 16/32-bit grayscale: PIL's convert("L") clips instead of scaling, so scale by hand.
        arr = np.asarray(im, dtype=np.float64)
        if arr.size and arr.max() > 255:
            arr = arr / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    return im.convert("RGB")


def _too_large(path: Path, pixels: int) -> DataError:
    return DataError(
        f"{path}: image has {pixels:,} pixels, more than the cap of {MAX_PIXELS:,} (MAX_PIXELS; a decompression "
        "bomb or an unusually huge photo); downscale it or remove it from the folder"
    )


def load_image(path: Path | str, image_size: int) -> np.ndarray:
    """One image file as uint8 (3, image_size, image_size) RGB, converted per the module's policy."""
    path = Path(path)
    try:
        with _strict_decoding(), Image.open(path) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise _too_large(path, width * height)
            if im.format == "JPEG":
                im.draft("RGB", (image_size, image_size))
            im.load()
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:  # noqa: BLE001 - a malformed EXIF block must not discard a decodable photo
                pass
            rgb = _to_rgb(im)
            width, height = rgb.size
            side = min(width, height)
            left, top = (width - side) / 2, (height - side) / 2
            rgb = rgb.resize(
                (image_size, image_size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
            )
            arr = np.asarray(rgb, dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file does not exist; restore it or remove it from the listing") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: rejected as a decompression bomb ({exc}); downscale or remove it") from exc
    except Exception as exc:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, struct.error, ...)
        raise DataError(
            f"{path}: corrupt, truncated or not an image ({type(exc).__name__}: {exc}); delete or replace the file"
        ) from exc
    if arr.shape != (image_size, image_size, 3):
        raise DataError(f"{path}: decoded to an unexpected shape {arr.shape}; delete or replace the file")
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_images(paths: Sequence[Path], image_size: int) -> np.ndarray:
    """Decode many files into uint8 (N, 3, S, S); raises one DataError naming every unusable file."""
    out = np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8)
    bad: list[str] = []
    for i, path in enumerate(paths):
        try:
            out[i] = load_image(path, image_size)
        except DataError as exc:
            bad.append(str(exc))
    if bad:
        listed = "\n  ".join(bad[:_MAX_LISTED])
        more = f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise DataError(f"{len(bad)} of {len(paths)} images could not be used:\n  {listed}{more}")
    return out


# ---------------------------------------------------------------------------------------------------------
# Listing folders


def _check_root(root: Path | str, what: str) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{what} folder {root} does not exist; check the path (DataSpec.root) or create it")
    if not root.is_dir():
        raise DataError(
            f"{what} path {root} is a file, not a folder; point root at the folder that holds the images"
        )
    if not any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise DataError(f"{what} folder {root} is empty; put the images in it (see datasets/README.md)")
    return root


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _describe(files: Sequence[Path]) -> str:
    """'3 × .gif, 1 × .txt' style summary of what was found instead of images."""
    counts = Counter(p.suffix.lower() or "(no extension)" for p in files)
    return ", ".join(f"{n} × {ext}" for ext, n in counts.most_common()) or "nothing"


def _visible_files(folder: Path, recursive: bool) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in it if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _warn_ignored(ignored: Sequence[Path], where: Path, why: str) -> None:
    if ignored:
        examples = ", ".join(p.name for p in ignored[:3])
        warnings.warn(
            f"{len(ignored)} file(s) in {where} ignored ({why}), e.g. {examples}", UserWarning, stacklevel=3
        )


def _given_classes(root: Path, subdirs: list[str], class_names: Sequence[str]) -> tuple[str, str]:
    """The (label-0, label-1) folders named by ``class_names``; DataError unless they are two existing folders."""
    if isinstance(class_names, str) or len(class_names) != 2 or class_names[0] == class_names[1]:
        raise DataError(
            f"class_names must be two different folder names (label 0, label 1), got {class_names!r}"
        )
    for name in class_names:
        if name not in subdirs:
            raise DataError(
                f"class folder {root / name} does not exist (class_names={tuple(class_names)!r}); "
                f"folders found: {subdirs or 'none'}.{did_you_mean(name, subdirs)}"
            )
    return (class_names[0], class_names[1])


def _found_classes(root: Path, subdirs: list[str]) -> tuple[str, str]:
    """The (label-0, label-1) folders found without class_names: one cat and one dog folder, or the only two."""
    cats = [d for d in subdirs if d.lower() in CAT_FOLDER_NAMES]
    dogs = [d for d in subdirs if d.lower() in DOG_FOLDER_NAMES]
    if len(cats) == 1 and len(dogs) == 1:
        chosen = (cats[0], dogs[0])
        others = [d for d in subdirs if d not in chosen]
        if others:
            warnings.warn(
                f"{root}: using {chosen[0]}/ and {chosen[1]}/; ignoring other folders {others}",
                stacklevel=3,
            )
        return chosen
    if len(subdirs) == 2 and not (len(cats) > 1 or len(dogs) > 1):
        return (subdirs[0], subdirs[1])
    raise _no_class_pair(root, subdirs)


def _no_class_pair(root: Path, subdirs: list[str]) -> DataError:
    """Why ``root``'s subfolders (none, one, or more than two) give no pair of classes, and how to fix it."""
    if not subdirs:
        loose = _visible_files(root, recursive=False)
        hint = (
            " They look like Kaggle Dogs-vs-Cats files: use source='kaggle'."
            if any(KAGGLE_PATTERN.match(p.name) for p in loose)
            else ""
        )
        return DataError(
            f"{root} has no class subfolders (found {_describe(loose)}); put the images of each class in "
            f"{root / 'cat'} and {root / 'dog'} (or any two folder names plus class_names).{hint}"
        )
    if len(subdirs) == 1:
        only = subdirs[0]
        missing = {
            **dict.fromkeys(CAT_FOLDER_NAMES, "dogs"),
            **dict.fromkeys(DOG_FOLDER_NAMES, "cats"),
        }.get(only.lower())
        fix = f"add a folder {root / missing}" if missing else "add a second class folder"
        return DataError(
            f"{root} has only one class folder ({only}/); a two-class dataset needs both: {fix} with its images"
        )
    return DataError(
        f"{root} has {len(subdirs)} class folders {subdirs}; choose two with class_names=(label0, label1) "
        "(DataSpec.class_names; the second is the watermarked class) or remove the others"
    )


def list_image_folder(
    root: Path | str, class_names: Sequence[str] | None = None
) -> tuple[list[Path], np.ndarray, tuple[str, str]]:
    """Image paths, labels and the (label-0, label-1) folder names of a ``root/<class>/*`` folder."""
    root = _check_root(root, "image")
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    chosen = _found_classes(root, subdirs) if class_names is None else _given_classes(root, subdirs, class_names)

    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(chosen):
        folder = root / name
        files = _visible_files(folder, recursive=True)
        images = [p for p in files if _is_image(p)]
        if not images:
            what = (
                "is empty"
                if not files
                else f"has no images with a supported extension {IMAGE_EXTENSIONS} (found {_describe(files)})"
            )
            animal = CLASS_NAMES[label] if name.lower() in CAT_FOLDER_NAMES + DOG_FOLDER_NAMES else repr(name)
            raise DataError(
                f"class folder {folder} {what}; add {animal} images ({', '.join(IMAGE_EXTENSIONS)}) to it"
            )
        _warn_ignored([p for p in files if not _is_image(p)], folder, f"extension not in {IMAGE_EXTENSIONS}")
        paths += images
        labels += [label] * len(images)
    return paths, np.asarray(labels, dtype=np.int64), chosen


def list_kaggle_folder(root: Path | str) -> tuple[list[Path], np.ndarray]:
    """Paths and labels of a Kaggle Dogs-vs-Cats folder (flat ``cat.<n>.jpg`` / ``dog.<n>.jpg``, or ``root/train``)."""
    root = _check_root(root, "Kaggle Dogs-vs-Cats")
    folder = root
    if not any(KAGGLE_PATTERN.match(p.name) for p in root.iterdir()) and (root / "train").is_dir():
        folder = root / "train"
    files = _visible_files(folder, recursive=False)
    matched = [p for p in files if KAGGLE_PATTERN.match(p.name)]
    if not matched:
        raise DataError(
            f"{folder} has no Kaggle-style images named cat.<n>.jpg / dog.<n>.jpg (found {_describe(files)}); "
            "extract the competition's train.zip there, or use source='folder' for class subfolders"
        )
    _warn_ignored(
        [p for p in files if not KAGGLE_PATTERN.match(p.name)],
        folder,
        "name is not cat.<n>.<ext> or dog.<n>.<ext>",
    )

    def key(p: Path) -> tuple[int, int]:
        m = KAGGLE_PATTERN.match(p.name)
        return (CLASS_NAMES.index(m.group(1).lower()), int(m.group(2)))

    matched.sort(key=key)
    labels = np.asarray([key(p)[0] for p in matched], dtype=np.int64)
    for label, name in enumerate(CLASS_NAMES):
        if not (labels == label).any():
            raise DataError(
                f"{folder} has no {name}.<n>.jpg files; both classes are needed (add the {name} images)"
            )
    return matched, labels


def list_oxford_pet(root: Path | str, split: str = "trainval") -> tuple[list[Path], np.ndarray]:
    """Paths and cat/dog labels of one split of a downloaded Oxford-IIIT Pet (via torchvision, never downloads)."""
    root = Path(root).expanduser()
    base = root / "oxford-iiit-pet"
    how = (
        f"download images.tar.gz and annotations.tar.gz from {OXFORD_URL} and extract both into {base} "
        "(giving images/ and annotations/); shortcut-bench never downloads"
    )
    if split not in ("trainval", "test"):
        raise DataError(f"Oxford-IIIT Pet split must be 'trainval' or 'test', got {split!r}")
    if not root.is_dir():
        raise DataError(f"Oxford-IIIT Pet root {root} does not exist; {how}")
    try:
        # Lazy: torchvision costs ~0.8 s after torch (measured), and a broken one must become a DataError here.
        from torchvision.datasets import OxfordIIITPet
    except Exception as exc:  # noqa: BLE001 - a torch/torchvision mismatch raises RuntimeError, not ImportError
        raise DataError(
            f"source 'oxford-pet' needs a working torchvision ({type(exc).__name__}: {exc}); install "
            "torchvision>=0.29 matching the installed torch"
        ) from exc

    try:
        ds = OxfordIIITPet(str(root), split=split, target_types="binary-category", download=False)
    except RuntimeError as exc:
        raise DataError(f"Oxford-IIIT Pet not found under {root} ({exc}); {how}") from exc
    except FileNotFoundError as exc:
        raise DataError(f"Oxford-IIIT Pet annotation file missing: {exc.filename}; {how}") from exc
    except ValueError as exc:
        raise DataError(
            f"malformed line in {base / 'annotations' / (split + '.txt')} ({exc}); each line must read "
            "'Name_1 CLASS_ID SPECIES BREED_ID'; re-extract annotations.tar.gz"
        ) from exc
    # Only torchvision's file list and labels are used: its __getitem__ would bypass the conversion policy
    # (alpha over black instead of white, no size cap, no truncation check).
    paths = [Path(p) for p in ds._images]
    labels = np.asarray(ds._bin_labels, dtype=np.int64)
    if not paths:
        raise DataError(
            f"{base / 'annotations' / (split + '.txt')} lists no images; re-extract annotations.tar.gz"
        )
    if set(np.unique(labels)) - {0, 1}:
        raise DataError(f"{base / 'annotations' / (split + '.txt')}: SPECIES must be 1 (cat) or 2 (dog)")
    return paths, labels


# ---------------------------------------------------------------------------------------------------------
# Public loaders


def load_image_folder(
    root: Path | str, image_size: int, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Images, labels and paths of a two-class ``root/<class>/*`` folder (cat(s)/dog(s), or class_names)."""
    paths, labels, _ = list_image_folder(root, class_names)
    return load_images(paths, image_size), labels, paths


def load_kaggle_folder(root: Path | str, image_size: int) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Images, labels and paths of a Kaggle Dogs-vs-Cats folder of ``cat.<n>.jpg`` / ``dog.<n>.jpg`` files."""
    paths, labels = list_kaggle_folder(root)
    return load_images(paths, image_size), labels, paths


def load_oxford_pet(
    root: Path | str, image_size: int, split: str = "trainval"
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Images, cat/dog labels and paths of an already downloaded Oxford-IIIT Pet split.

    Reference: Parkhi et al., "Cats and Dogs", CVPR 2012 (the Oxford-IIIT Pet dataset).
    """
    paths, labels = list_oxford_pet(root, split)
    return load_images(paths, image_size), labels, paths
