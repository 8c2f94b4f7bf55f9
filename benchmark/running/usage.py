"""Up-front checks of user options (seed, device, output folders), so a bad run fails before building anything."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from benchmark.errors import ConfigError, did_you_mean

DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_seed(seed) -> int:
    """The seed as a non-negative int (numpy's SeedSequence and the data cache keys need one)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


MAX_MODEL_SEEDS = 20


def check_model_seeds(value) -> int | None:
    """``--bench-model-seeds`` as a count of training seeds (None: the profile's), or ConfigError naming the fix."""
    if value is None:
        return None
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--bench-model-seeds must be a whole number of training seeds, e.g. 3; got {value!r}") from None
    if not 1 <= k <= MAX_MODEL_SEEDS:
        raise ConfigError(f"--bench-model-seeds must be between 1 and {MAX_MODEL_SEEDS} (each seed trains three "
                          f"models); got {k}")
    return k


def check_device(device: str | None) -> str | None:
    """``device`` if torch can parse it and it is present on this machine, else ConfigError naming the fix."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        kind = str(device).split(":")[0]
        raise ConfigError(
            f"device {device!r} is not a torch device ({exc}); use one of {DEVICE_TYPES}, e.g. 'cuda:0'."
            f"{did_you_mean(kind, DEVICE_TYPES)}"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use 'cpu'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s).")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"device {device!r} asked for, but torch sees no Apple MPS device here; use 'cpu'.")
    elif dev.type not in DEVICE_TYPES:
        raise ConfigError(f"device {device!r} is not supported; use one of {DEVICE_TYPES}.")
    return device


def check_output_dir(path: Path | str, what: str) -> Path:
    """``path`` if it is (or can become) a writable folder; ConfigError saying which option to change.

    Nothing is created here: a run that fails later must not leave empty folders behind.
    """
    path = Path(path)
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        raise ConfigError(f"{what} {path} is not a folder{where}; point it at a folder.")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} is not writable ({existing} denies writing); choose another folder.")
    return path
