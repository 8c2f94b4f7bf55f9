"""Model weights pinned next to a baseline: copied in when it is written, verified and loaded when compared.

Seeded training is bit-identical on one machine but not across machines (CPU float arithmetic differs), so a
baseline that only named its seed would be compared with other models elsewhere. The baseline therefore
stores every model the grid used (``<baseline stem>-models/<name>-<sha256 prefix>.pt``) with its sha256, architecture and
model card, and compare mode grades exactly those weights.
"""

from __future__ import annotations

import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.cache import atomic_path, file_sha256
from benchmark.errors import ConfigError
from benchmark.models.arch import build_model

PINNED_SUFFIX = "-models"


class PinnedModelError(ConfigError):
    """A baseline's pinned weights are missing, altered, unloadable or of another architecture."""


def models_dir(baseline_path: Path) -> Path:
    """The folder that holds a baseline's pinned weights: ``reports/baseline.json`` -> ``reports/baseline-models``."""
    baseline_path = Path(baseline_path)
    return baseline_path.parent / f"{baseline_path.stem}{PINNED_SUFFIX}"


def pin_models(baseline_path: Path, weights: dict[str, dict]) -> dict[str, dict]:
    """Copy the run's weights files (``run["weights"]``) beside the baseline; return the baseline's ``models`` entry.

    Each copy is checked against the sha256 the run recorded, so a baseline never pins other bits than it graded.
    """
    folder = models_dir(baseline_path)
    out: dict[str, dict] = {}
    for name, w in sorted(weights.items()):
        src = Path(w["file"])
        # Named by content: an interrupted update leaves the old baseline's files in place and still valid.
        dst = folder / f"{name}-{w['sha256'][:12]}.pt"
        if not src.is_file():
            raise PinnedModelError(f"cannot pin the {name} model: its weights file {src} is gone (the models/ cache "
                                   "was cleared since the run); run the suites again to rebuild it")
        if file_sha256(src) != w["sha256"]:
            raise PinnedModelError(f"cannot pin the {name} model: {src} no longer holds the weights the run graded "
                                   f"(sha256 {w['sha256'][:12]}…); run the suites again")
        if src.resolve() != dst.resolve():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        out[name] = {"file": f"{folder.name}/{dst.name}", "sha256": w["sha256"], "bytes": dst.stat().st_size,
                     "arch": w["arch"], "depth": w["depth"], "width": w["width"], "card": w.get("card") or {}}
    return out


def remove_unpinned(baseline_path: Path, models: dict[str, dict]) -> None:
    """Delete weights files in the baseline's models folder that the baseline no longer names."""
    folder = models_dir(baseline_path)
    keep = {Path(m["file"]).name for m in models.values()}
    for f in folder.glob("*.pt") if folder.is_dir() else ():
        if f.name not in keep:
            f.unlink()


def _fix(baseline_path: Path, entry: dict) -> str:
    return (f"Restore it from git (`git checkout -- {Path(baseline_path).parent / entry['file']}`), or record a new "
            f"baseline with its own models: remove {baseline_path} and run `pytest suites/ --bench-update-baseline "
            f"{baseline_path}`")


def check_entries(baseline: dict, baseline_path: Path) -> None:
    """Refuse a baseline without pinned biased and control models (PinnedModelError says how to fix it)."""
    models = baseline.get("models")
    if not isinstance(models, dict) or not {"biased", "control"} <= set(models):
        raise PinnedModelError(
            f"{baseline_path} pins no biased and control models, so another machine would compare other weights. "
            f"Record it again with `pytest suites/ --bench-update-baseline {baseline_path}`.")
    for name, m in models.items():
        if not isinstance(m, dict) or not all(isinstance(m.get(k), str) for k in ("file", "sha256", "arch")) \
                or not all(isinstance(m.get(k), int) for k in ("depth", "width")):
            raise PinnedModelError(f"{baseline_path}: the entry of pinned model {name!r} needs file, sha256, arch, "
                                   "depth and width. Restore the baseline from git or record it again.")


@dataclass
class PinnedModels:
    """The verified models a baseline pins: {name: (model on the CPU in eval mode, card, weights file)}."""

    source: Path  # the baseline file
    models: dict[str, tuple[Any, dict, Path]]


def load_pinned(baseline: dict, baseline_path: Path, archs: dict[str, str] | None = None, *,
                require: bool = True) -> PinnedModels:
    """Every model a baseline pins, each verified before it is used.

    Raises PinnedModelError when a file is missing, its sha256 differs from the baseline's record, it is not a
    plain tensor checkpoint (``weights_only=True``), or it does not fit the recorded architecture; ``archs``
    ({name: arch}) are the architectures this run needs (e.g. the profile's for the biased and control models);
    with ``require`` every one of them must be pinned (compare mode), else a missing one is left to train (an
    update that adds a model).
    """
    check_entries(baseline, baseline_path)
    missing = sorted(set(archs or {}) - set(baseline["models"])) if require else []
    if missing:
        raise PinnedModelError(
            f"{baseline_path} pins no {', '.join(missing)} model, which this run grades (it pins "
            f"{', '.join(sorted(baseline['models']))}): it was recorded by an older shortcut-bench. Record it again "
            f"with `pytest suites/ --bench-update-baseline {baseline_path}`.")
    out = {}
    for name, m in sorted(baseline["models"].items()):
        path = Path(baseline_path).parent / m["file"]
        where = f"{baseline_path} pins the {name} model in {path}"
        wanted = (archs or {}).get(name)
        if wanted is not None and m["arch"] != wanted:
            raise PinnedModelError(f"{where}, a {m['arch']} model, but this run's profile grades a {wanted} there: "
                                   f"the baseline belongs to another profile. {_fix(baseline_path, m)}.")
        if not path.is_file():
            raise PinnedModelError(f"{where}, which is missing. {_fix(baseline_path, m)}.")
        sha = file_sha256(path)
        if sha != m["sha256"]:
            raise PinnedModelError(f"{where}, whose sha256 is {sha[:12]}… but the baseline recorded {m['sha256'][:12]}…: "
                                   f"the file was altered or replaced. {_fix(baseline_path, m)}.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as exc:
            raise PinnedModelError(f"{where}, which is not a plain weights checkpoint (torch.load weights_only=True: "
                                   f"{type(exc).__name__}). {_fix(baseline_path, m)}.") from None
        try:
            model = build_model(m["arch"], depth=m["depth"], width=m["width"],
                                **({"image_size": m["image_size"]} if m.get("image_size") else {}))
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError, ValueError, ConfigError) as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise PinnedModelError(f"{where}, which does not fit the {m['arch']} architecture (depth {m['depth']}, "
                                   f"width {m['width']}) it records: {first}. {_fix(baseline_path, m)}.") from None
        out[name] = (model.eval(), {**m.get("card", {}), "weights_sha256": m["sha256"]}, path)
    return PinnedModels(Path(baseline_path), out)
