"""Build the whole graded world (data + biased and control models) from plain options; no pytest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from benchmark.data import World, build_world
from benchmark.models.train import TrainedModel, default_device, get_trained_model
from benchmark.options import BenchOptions
from benchmark.profiles import Profile


@dataclass
class Bench:
    """The data and both trained models of one run."""

    profile: Profile
    options: BenchOptions
    world: World
    biased: TrainedModel
    control: TrainedModel

    @property
    def device(self) -> torch.device:
        """Device the models live on."""
        return next(self.biased.model.parameters()).device


def prepare(profile: Profile, options: BenchOptions, *, progress: bool = True) -> Bench:
    """Build (or load from cache) the world and train (or load) the biased and control models."""
    world = build_world(options.data_spec(profile), Path(options.cache_root) / "datasets")
    device = torch.device(options.device) if options.device else default_device()
    models = {
        split: get_trained_model(
            world, split, profile, seed=options.seed, cache_dir=Path(options.cache_root) / "models",
            device=device, progress=progress,
        )
        for split in ("biased", "control")
    }
    return Bench(profile, options, world, models["biased"], models["control"])


