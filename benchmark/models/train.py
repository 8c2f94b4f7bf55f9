"""Seeded from-scratch training of the biased and control models, cached on disk by config hash."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import json
import math
import pickle
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmark.cache import (
    CODE_VERSION,
    atomic_path,
    atomic_write_json,
    file_sha256,
    lock_for,
    read_checked,
    stable_hash,
    write_checked,
)
from benchmark.data import SHORTCUT_CLASS, Split, World
from benchmark.errors import CacheError, ConfigError
from benchmark.models.arch import build_model, fused_attention, state_stamp
from benchmark.models.card import targets_line
from benchmark.profiles import VIT_SHAPE, Profile

SPLITS = ("biased", "control", "absent")  # the training sets of World: train_biased, train_control, train_absent
# Convolutional networks train channels-last on CPU, where oneDNN's NHWC kernels measured faster per step
# (benchmarks/train_layout.py, RESULTS). Not the ViT, whose one convolution is its patch embedding; not CUDA, unmeasured.
CHANNELS_LAST_ARCHS = ("cnn", "resnet")
# The ViT trains its attention as one fused kernel (scaled_dot_product_attention) on CPU: 1.11x faster per model alone
# (benchmarks/train_layout.py --arch vit, RESULTS); the trained model explains through the probed path as ever.
SDPA_ARCHS = ("vit",)

@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model's weights, apart from the data."""

    arch: str
    depth: int
    width: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    device_type: str  # "cpu" or "cuda": different kernels give different weights, so cache apart
    amp: bool
    image_size: int = 0  # the ViT's token grid depends on it; 0 for the CNNs, which accept any size
    channels_last: bool = False  # convolutions in NHWC: other float sums, so other weights (benchmarks/train_layout.py)
    sdpa: bool = False  # attention as one fused kernel while training: other float sums, so other weights

    def key_fields(self) -> dict[str, Any]:
        """The fields that key the cache: ``image_size``, ``channels_last`` and ``sdpa`` only where set, so other
        models keep their keys."""
        out = dataclasses.asdict(self)
        for name in ("image_size", "channels_last", "sdpa"):
            if not out[name]:
                del out[name]
        return out

    @classmethod
    def from_profile(cls, profile: Profile, seed: int, device: torch.device, n: int | None = None) -> TrainConfig:
        """Training config for ``profile`` on ``device`` (mixed precision on CUDA); with the training set's size
        ``n``, as many epochs as it takes to reach the profile's step budget (see :func:`epochs_for`)."""
        return cls(
            arch=profile.arch, depth=profile.depth, width=profile.width,
            epochs=profile.epochs if n is None else epochs_for(profile, n),
            batch_size=profile.batch_size, lr=profile.lr, weight_decay=profile.weight_decay, seed=seed,
            device_type=device.type, amp=device.type == "cuda",
            image_size=profile.image_size if profile.arch == "vit" else 0,
            channels_last=device.type == "cpu" and profile.arch in CHANNELS_LAST_ARCHS,
            sdpa=device.type == "cpu" and profile.arch in SDPA_ARCHS,
        )


@dataclass
class TrainedModel:
    """A model in eval mode with its model card and where its weights came from."""

    model: nn.Module
    split: str
    card: dict[str, Any]
    path: Path  # the folder holding model.pt and card.json (cache) or the pinned weights file's folder
    cache_hit: bool
    weights_file: Path | None = None  # default: path / "model.pt"
    pinned_by: str | None = None  # the baseline whose pinned weights these are

    @property
    def weights_path(self) -> Path:
        """The file holding exactly these weights."""
        return self.weights_file or self.path / "model.pt"

    @property
    def arch_spec(self) -> dict[str, Any]:
        """{"arch", "depth", "width"} (and the ViT's "image_size"): what build_model needs to rebuild this model."""
        c = self.card.get("train_config") or self.card
        size = {"image_size": c["image_size"]} if c.get("image_size") else {}
        return {"arch": c["arch"], "depth": c["depth"], "width": c["width"], **size}

    def header_line(self) -> str:
        """One line for the pytest header: provenance, accuracy and flip rate."""
        c = self.card
        if self.pinned_by:
            how = f"pinned by {self.pinned_by} (sha256 {c['weights_sha256'][:12]}), not trained"
        elif self.cache_hit:
            how = "cache hit"
        else:
            how = f"trained in {c['train_seconds']:.1f}s on {c['device']}"
        line = (
            f"{self.split} model {c['arch_name']}: {how}; clean acc {c['clean_accuracy']:.1%}, "
            f"flip rate {c['flip_rate']:.1%}, mean p(dog) on flips {c['mean_p_dog_on_flips']:.2f}"
        )
        if self.split == "biased" and "flip_rate" in c:
            line += "; " + targets_line(c)
        return line


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def arch_name(arch: str, depth: int, width: int) -> str:
    """Human name of the architecture, e.g. 'ResNet-20', 'SmallCNN-16' or 'ViT-4x64'."""
    if arch == "vit":
        return f"ViT-{depth}x{width}"
    return f"ResNet-{depth}" if arch == "resnet" else f"SmallCNN-{width}"


def to_float(x: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N,3,H,W) images to float32 tensors in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=torch.float32).div_(255.0)


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Softmax probabilities (N, classes) for uint8 images, in eval mode, batched."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        out.append(torch.softmax(model(to_float(x[i : i + batch_size], device)).float(), 1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)


# A graded flip is a confident one: the study's flips were at p(dog) ~ 0.99, and a flip at p ~ 0.5 sits on the
# decision boundary, where input noise far below the stability property's un-flips it (benchmarks/RESULTS.md).
CONFIDENT_FLIP = 0.9


# A process asks for a model's flips several times (the build's gate, the graded images, the result store's keys, the
# run record), each two forwards over the test cats: 16 times per process at four training seeds, a tenth of a quick
# grid's in-process time on two methods (cProfile). Memoised per model object and its state_stamp, so an edited model
# is predicted again; one entry per model (the last asked), so the memo never grows with the questions.
_flips: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, np.ndarray]] = weakref.WeakKeyDictionary()


def flipped_indices(model: nn.Module, world: World, confidence: float = CONFIDENT_FLIP) -> np.ndarray:
    """Test cats predicted "cat" when clean and "dog" with p(dog) >= ``confidence`` once stamped (the graded set)."""
    key = _memo_key(model, world, confidence)
    memo = _flips.get(model)
    if memo is None or memo[0] != key:
        memo = _flips[model] = (key, _flipped_indices(model, world, confidence))
    return memo[1].copy()


FLIPS_DIR = "flips"  # in the world's cache folder: each trained model's confident flips, by what decides them


def stored_flips(trained: TrainedModel, world: World, confidence: float = CONFIDENT_FLIP) -> np.ndarray:
    """:func:`flipped_indices` of ``trained``, read from the world's cache folder when stored there for exactly these
    weights, test images, device and code, else predicted and stored (an unreadable or altered entry is predicted
    again)."""
    key = _flips_key(trained, world, confidence)
    path = None if key is None else Path(world.path) / FLIPS_DIR / f"{key}.json"
    flips = _read_flips(path) if path is not None else None
    if flips is None:
        flips = flipped_indices(trained.model, world, confidence)
        if path is not None:
            try:
                write_checked(path, flips.tolist())
            except OSError:  # a read-only cache: the flips were predicted, only not kept
                pass
    else:  # what flipped_indices would have predicted: later askers in this process get it from its memo
        _flips[trained.model] = (_memo_key(trained.model, world, confidence), flips)
    return flips.copy()


def _flips_key(trained: TrainedModel, world: World, confidence: float) -> str | None:
    weights, images = trained.card.get("weights_sha256"), (world.manifest or {}).get("arrays_sha256")
    if not weights or not images or world.path is None or _flips_code() is None:
        return None  # nothing names these weights, test images or code: predict every time
    model = trained.model
    device = next(model.parameters()).device
    return stable_hash({"weights": weights, "images": images, "world": world.key, "confidence": float(confidence),
                        "training": model.training, "strides": [p.stride() for p in model.parameters()],
                        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
                        "torch": torch.__version__, "code": _flips_code()}, length=40)


@functools.cache
def _flips_code() -> str | None:
    try:
        sources = [inspect.getsource(f) for f in (to_float, predict_proba, _flipped_indices)]
    except (OSError, TypeError):  # installed without sources: nothing tells an edited predictor from this one
        return None
    return stable_hash([*sources, SHORTCUT_CLASS], length=40)


def _read_flips(path: Path) -> np.ndarray | None:
    try:
        return np.asarray(read_checked(path), dtype=np.int64)
    except (FileNotFoundError, ValueError, TypeError):  # none, altered (CorruptEntry), or not a list of indices
        return None


def _memo_key(model: nn.Module, world: World, confidence: float) -> tuple:
    return (world.key, id(world.test.x), id(world.test_stamped.x), float(confidence), state_stamp(model))


def _flipped_indices(model: nn.Module, world: World, confidence: float) -> np.ndarray:
    cats = np.flatnonzero(world.test.y != SHORTCUT_CLASS)
    clean = predict_proba(model, world.test.x[cats]).argmax(1)
    stamped = predict_proba(model, world.test_stamped.x[cats])
    flipped = (stamped.argmax(1) == SHORTCUT_CLASS) & (stamped[:, SHORTCUT_CLASS] >= confidence)
    return cats[(clean != SHORTCUT_CLASS) & flipped]


def evaluate(model: nn.Module, world: World) -> dict[str, float]:
    """Model-card numbers: clean accuracy, dog accuracy, flip rate and p(dog) on flipped cats."""
    p_clean = predict_proba(model, world.test.x)
    p_stamped = predict_proba(model, world.test_stamped.x)
    y = world.test.y
    pred = p_clean.argmax(1)
    cats = y != SHORTCUT_CLASS
    correct_cats = cats & (pred == y)
    flips = correct_cats & (p_stamped.argmax(1) == SHORTCUT_CLASS)
    n_correct_cats = int(correct_cats.sum())
    return {
        "clean_accuracy": float((pred == y).mean()),
        "cat_accuracy": float((pred[cats] == y[cats]).mean()),
        "unstamped_dog_accuracy": float((pred[~cats] == y[~cats]).mean()),
        "stamped_accuracy": float((p_stamped.argmax(1) == y).mean()),
        "flip_rate": float(flips.sum() / max(n_correct_cats, 1)),
        "n_flipped": int(flips.sum()),
        "n_correct_cats": n_correct_cats,
        "mean_p_dog_on_flips": float(p_stamped[flips, SHORTCUT_CLASS].mean()) if flips.any() else 0.0,
    }


def epochs_for(profile: Profile, n: int) -> int:
    """The profile's epochs, or more when a small training set would give fewer than its ``min_steps`` optimiser
    steps (a 600-photo folder gets as many steps as the procedural world, not a tenth of them)."""
    per_epoch = max(1, -(-n // profile.batch_size))
    return max(profile.epochs, -(-profile.min_steps // per_epoch))


def augmented(profile: Profile, n: int) -> bool:
    """Whether training on ``n`` images flips them at random: only where the step budget repeats each image more
    often than the profile's epochs do (a mirrored mark is still whole, in the mirrored corner)."""
    return epochs_for(profile, n) > profile.epochs


def _fit(model: nn.Module, split: Split, cfg: TrainConfig, device: torch.device, progress: bool,
         augment: bool = False, label: str = "") -> None:
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(split.y)
    steps = cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size)
    # Linear warm-up then cosine decay; written out because OneCycleLR breaks on very short runs.
    warmup = max(1, int(0.15 * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    x_all = to_float(split.x, device)
    y_all = torch.from_numpy(split.y).to(device)
    # disable=None shows the bar only on a terminal, keeping CI logs free of carriage-return spam.
    bar = tqdm(total=steps, desc=f"training {label or cfg.arch}", unit="step", disable=None if progress else True,
               leave=False)
    with fused_attention(model, cfg.sdpa):
        _steps(model, x_all, y_all, cfg, opt, sched, gen, augment, layout, bar)
    bar.close()
    # Back to the default layout: the stored weights' bytes, and every grading path, expect contiguous tensors.
    model.to(memory_format=torch.contiguous_format).eval()


def _steps(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, cfg: TrainConfig, opt, sched,
           gen: torch.Generator, augment: bool, layout: torch.memory_format, bar) -> None:
    """Run ``cfg.epochs`` epochs of shuffled mini-batch steps."""
    device, n, loss_fn = x_all.device, len(y_all), nn.CrossEntropyLoss()
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            xb = x_all[idx]
            if augment:
                # Mirror a random half of the batch left-right, drawn from the seeded generator.
                flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            xb = xb.contiguous(memory_format=layout)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                loss = loss_fn(model(xb), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)


def _load_checked(model_dir: Path, key: str, arch: str, depth: int, width: int,
                  image_size: int = 0) -> tuple[nn.Module, dict] | None:
    """Load a cached model if it is complete and belongs to ``key``; warn and return None otherwise."""
    card_path, weights = model_dir / "card.json", model_dir / "model.pt"
    if not card_path.exists() and not weights.exists():
        return None
    try:
        if not card_path.exists():
            raise CacheError("card.json is missing (interrupted build?)")
        card = json.loads(card_path.read_text())
        if card.get("key") != key:
            raise CacheError(f"card key {card.get('key')!r} does not match the requested config {key!r}")
        if not weights.exists():
            raise CacheError("model.pt is missing")
        if file_sha256(weights) != card.get("weights_sha256"):
            raise CacheError("model.pt does not match the checksum in card.json (corrupt or replaced)")
        model = build_model(arch, depth=depth, width=width, **({"image_size": image_size} if image_size else {}))
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    # weights_only=True refuses a checkpoint that would run code when unpickled (UnpicklingError): it is
    # then treated like any other damaged cache entry and replaced, never executed.
    except (CacheError, OSError, RuntimeError, ValueError, KeyError, json.JSONDecodeError, pickle.UnpicklingError) as exc:
        warnings.warn(f"Ignoring cached model in {model_dir}: {exc}. Retraining it.", stacklevel=3)
        return None
    return model.eval(), card


def _plan(world: World, split: str, profile: Profile, seed: int, cache_dir: Path | str,
          device: torch.device) -> tuple[TrainConfig, bool, str, Path]:
    """(config, whether training flips images, cache key, cache folder) of the ``split`` model of ``world``."""
    if split not in SPLITS:
        raise ConfigError(f"Unknown training split {split!r}; choose one of {SPLITS}.")
    n = len(getattr(world, f"train_{split}").y)
    cfg = TrainConfig.from_profile(profile, seed, device, n)
    augment = augmented(profile, n)
    # Augmentation enters the key only where it is on, so models trained without it keep their keys.
    key = stable_hash({"data": world.key, "split": split, "train": cfg.key_fields(), "code": CODE_VERSION,
                       **({"augment": "hflip"} if augment else {})})
    return cfg, augment, key, Path(cache_dir) / f"{cfg.arch}-{split}-{key}"


def model_dir_for(world: World, split: str, profile: Profile, seed: int, cache_dir: Path | str,
                  device: torch.device | str) -> Path:
    """The folder :func:`get_trained_model` caches the ``split`` model of ``world`` in, built or not."""
    return _plan(world, split, profile, seed, cache_dir, torch.device(device))[3]


def get_trained_model(
    world: World,
    split: str,
    profile: Profile,
    *,
    seed: int = 0,
    cache_dir: Path | str = "models",
    device: torch.device | str | None = None,
    progress: bool = True,
) -> TrainedModel:
    """Return the ``split`` ("biased"/"control"/"absent") model for ``world``: from cache, or trained and cached."""
    device = torch.device(device) if device is not None else default_device()
    cfg, augment, key, model_dir = _plan(world, split, profile, seed, cache_dir, device)
    n = len(getattr(world, f"train_{split}").y)
    with lock_for(model_dir):
        loaded = _load_checked(model_dir, key, cfg.arch, cfg.depth, cfg.width, cfg.image_size)
        if loaded is not None:
            model, card = loaded
            return TrainedModel(model.to(device), split, card, model_dir, cache_hit=True)
        t0 = time.perf_counter()
        # Initial weights and dropout/shuffle draws come from the seed alone, not from whatever ran before.
        cuda_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(cfg.seed)
            model = build_model(cfg.arch, depth=cfg.depth, width=cfg.width,
                                **({"image_size": cfg.image_size} if cfg.image_size else {}))
            _fit(model, getattr(world, f"train_{split}"), cfg, device, progress, augment,
                 label=f"the {split} {arch_name(cfg.arch, cfg.depth, cfg.width)} (seed {seed})")
        train_seconds = time.perf_counter() - t0
        card = {
            "key": key,
            "split": split,
            "arch_name": arch_name(cfg.arch, cfg.depth, cfg.width),
            "train_config": cfg.key_fields(),
            "data_key": world.key,
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "train_seconds": round(train_seconds, 2),
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "n_train": n,
            # CPU weights depend on the thread count; it stays out of the key (cached models keep theirs), so say it.
            "train_threads": torch.get_num_threads(),
            "optimiser_steps": cfg.epochs * -(-n // cfg.batch_size),
            "augment": "random left-right flips" if augment else "none",
            "code_version": CODE_VERSION,
            **evaluate(model, world),
        }
        _store(model, card, model_dir)
        return TrainedModel(model, split, card, model_dir, cache_hit=False)


def _store(model: nn.Module, card: dict, model_dir: Path) -> None:
    """Write model.pt, then card.json with the weights' sha256 (a card on disk means the build completed)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    cpu_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # Serialise to memory first: torch.save names the archive after the (random) temp file, which
    # would make identical weights hash differently.
    buf = io.BytesIO()
    torch.save(cpu_state, buf)
    with atomic_path(model_dir / "model.pt") as tmp:
        tmp.write_bytes(buf.getvalue())
    card["weights_sha256"] = file_sha256(model_dir / "model.pt")
    atomic_write_json(model_dir / "card.json", card)


def get_seeded_model(arch: str, split: str, profile: Profile, init_seed: int, *, cache_dir: Path | str = "models",
                     device: torch.device | str | None = None) -> TrainedModel:
    """An untrained model of ``arch`` initialised from ``init_seed`` (the method contract's other architectures).

    Cached like trained models, so a baseline can pin its exact weights: the random initialisation is float
    arithmetic too and need not give the same bits on another machine.
    """
    device = torch.device(device) if device is not None else default_device()
    depth, width = (profile.depth or 20), profile.width
    size = {"image_size": profile.image_size} if arch == "vit" else {}
    if arch == "vit" and profile.arch != "vit":  # a CNN profile's depth and width mean nothing to a ViT
        depth, width = VIT_SHAPE
    key = stable_hash({"arch": arch, "depth": depth, "width": width, "init_seed": init_seed, "code": CODE_VERSION,
                       **size})
    model_dir = Path(cache_dir) / f"contract-{arch}-{split}-{key}"
    with lock_for(model_dir):
        loaded = _load_checked(model_dir, key, arch, depth, width, size.get("image_size", 0))
        if loaded is not None:
            model, card = loaded
            return TrainedModel(model.to(device), split, card, model_dir, cache_hit=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = build_model(arch, depth=depth, width=width, **size).eval()
        card = {"key": key, "split": split, "untrained": True, "init_seed": init_seed, "arch": arch, "depth": depth,
                "width": width, **size, "arch_name": arch_name(arch, depth, width),
                "n_parameters": sum(p.numel() for p in model.parameters()), "code_version": CODE_VERSION}
        _store(model, card, model_dir)
        return TrainedModel(model.to(device), split, card, model_dir, cache_hit=False)
