"""Named size profiles: how big the data, the models and the grading budgets are."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from benchmark.errors import ConfigError, did_you_mean

# Pixel-valued parameters (windows, strides, patches) are given for 32 px images and scaled to the image size.
REFERENCE_SIZE = 32


def scale_px(value: int, size: int) -> int:
    """Scale a pixel length given for 32 px images to an image of ``size`` px (at least 1)."""
    return max(1, int(round(value * size / REFERENCE_SIZE)))


@dataclass(frozen=True)
class Profile:
    """One consistent choice of data size, architecture, training budget and evaluation budget."""

    name: str
    description: str
    image_size: int
    n_train: int
    n_test: int
    arch: str  # "cnn", "resnet" or "vit"
    depth: int  # ResNet depth (6n+2) or the ViT's blocks; ignored for the CNN
    width: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    method_level: str  # "cheap" or "paper": which parameter set each method uses
    # Flipped images graded by the properties whose metrics call the model (a declared subsample), over all training
    # seeds together: each of K seeds grades its share (per_seed), so grading costs about the same at any K.
    n_eval: int
    contract_archs: tuple[str, ...]  # architectures the method contract runs on
    # Wall-clock seconds one grid cell (its attributions, metric and controls) may take before it is an
    # ERROR: generous for the slowest healthy method on the profile's hardware, so only a hang trips it.
    cell_timeout_s: float
    # Flipped images graded by the properties whose metrics read only the maps and the mask (localisation,
    # complexity), over all training seeds together like n_eval: None grades every flipped test cat of every seed.
    # They cost one map per image and method, nothing more.
    n_map_only: int | None = None
    # Training seeds of every model arm (``--bench-model-seeds`` overrides): cells' CIs cover seeds, then images.
    model_seeds: int = 1
    # Fewest optimiser steps a training run takes: a small folder trains more epochs to reach them (with random
    # left-right flips); the default is the procedural world's own count, so it changes nothing there.
    min_steps: int = 0

    def per_seed(self, seeds: int) -> Profile:
        """This profile as one of ``seeds`` training seeds grades it: its share of each image budget, rounded up."""
        if seeds <= 1:
            return self
        return dataclasses.replace(self, n_eval=-(-self.n_eval // seeds),
                                   n_map_only=None if self.n_map_only is None else -(-self.n_map_only // seeds))

    def graded(self, map_only: bool, available: int) -> int:
        """How many of ``available`` flipped images a property grades (always a prefix of the graded set)."""
        n = (self.n_map_only if self.n_map_only is not None else available) if map_only else self.n_eval
        return min(n, available)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="quick",
            description="CPU-friendly: small plain CNN at 32 px, cheap method settings",
            image_size=32, n_train=6000, n_test=1000, arch="cnn", depth=0, width=16,
            epochs=6, batch_size=128, lr=3e-3, weight_decay=5e-4, method_level="cheap",
            # 600 s: KernelShap's maps (3 models x 362 flipped cats) took 120 s on a loaded 2-core machine and hit the
            # old 120 s limit (benchmarks/RESULTS.md); the limit is a hang detector, not a speed budget.
            # Four training seeds share the one-seed grid's image budget: 90 map-only and 4 model-calling images
            # each. Seed-to-seed spread is most of a seed mean's variance here: one seed's interval covers the recipe's
            # effect 25-49% of the time on localisation, complexity and randomisation, and three seeds' t interval
            # (2 degrees of freedom) left most verdicts undecided (benchmarks/RESULTS.md, seeds x images).
            n_eval=16, contract_archs=("cnn", "resnet"), cell_timeout_s=600, min_steps=282, n_map_only=360,
            model_seeds=4,
        ),
        Profile(
            name="standard",
            description="GPU default: ResNet-20 at 64 px, paper method settings",
            image_size=64, n_train=20000, n_test=2000, arch="resnet", depth=20, width=16,
            epochs=15, batch_size=128, lr=3e-3, weight_decay=5e-4, method_level="paper",
            n_eval=192, contract_archs=("resnet", "cnn"), cell_timeout_s=1800, model_seeds=3, min_steps=2355,
        ),
        Profile(
            name="paper",
            description="Original-study scale: ResNet-38 at 64 px on 25,000 images",
            image_size=64, n_train=25000, n_test=2500, arch="resnet", depth=38, width=16,
            epochs=30, batch_size=128, lr=3e-3, weight_decay=5e-4, method_level="paper",
            n_eval=384, contract_archs=("resnet", "cnn"), cell_timeout_s=3600, model_seeds=3, min_steps=5880,
        ),
    )
}


# The ViT (``--bench-arch vit``) of every profile: blocks and token width, patch 4 (benchmark.models.arch), and its
# training budget in optimiser steps. On quick, 564 is the smallest budget tried that met the shortcut targets on each
# of eight training seeds, for four blocks (376 and 423 met them on seeds 0-3 and missed on seed 4, 329 missed on
# seed 2, 282 on seed 1) and for three (470 missed on seed 7, 376 on seed 2); benchmarks/vit_budget.py, RESULTS.md.
# Three blocks, since four cost 1.79x the CNN's cold run (issue 29 asks <= 1.5x). Standard and paper double their CNN
# budgets the same way, untested.
VIT_SHAPE = (3, 64)
VIT_STEPS = {"quick": 564, "standard": 4710, "paper": 11760}
VIT_LR = 1e-3


# Option help quotes the profiles, so it cannot drift from them.
SEEDS_BY_PROFILE = ", ".join(f"{p.model_seeds} on {name}" for name, p in PROFILES.items())


def with_arch(profile: Profile, arch: str | None) -> Profile:
    """``profile`` training ``arch`` instead of its own: "vit" swaps in the ViT's shape and step budget."""
    if arch in (None, profile.arch):
        return profile
    if arch != "vit":
        raise ConfigError(f"--bench-arch: unknown architecture {arch!r}; choose {profile.arch!r} (the profile's) or "
                          f"'vit'.{did_you_mean(arch, (profile.arch, 'vit'))}")
    depth, width = VIT_SHAPE
    return dataclasses.replace(profile, arch="vit", depth=depth, width=width, lr=VIT_LR,
                               min_steps=VIT_STEPS.get(profile.name, profile.min_steps), contract_archs=("vit",))


def resolve_profile(name: str | None = None, *, cuda: bool | None = None) -> tuple[Profile, str]:
    """Pick the profile from an explicit name, $SHORTCUT_BENCH_PROFILE, or the hardware; say why."""
    if name:
        reason = "chosen with --bench-profile"
    elif os.environ.get("SHORTCUT_BENCH_PROFILE"):
        name, reason = os.environ["SHORTCUT_BENCH_PROFILE"], "from $SHORTCUT_BENCH_PROFILE"
    else:
        if cuda is None:
            import torch  # lazy: ~0.9 s (measured); properties and verdict import this module

            cuda = torch.cuda.is_available()
        name = "standard" if cuda else "quick"
        reason = "default on a CUDA GPU" if cuda else "default without a GPU"
    if name not in PROFILES:
        raise ConfigError(
            f"Unknown profile {name!r}; choose one of {sorted(PROFILES)}.{did_you_mean(name, PROFILES)}"
        )
    return PROFILES[name], reason


def override(profile: Profile, **changes) -> Profile:
    """Return a copy of ``profile`` with some fields changed (used by tests and the CLI)."""
    unknown = set(changes) - {f.name for f in dataclasses.fields(Profile)}
    if unknown:
        raise ConfigError(f"Unknown profile field(s) {sorted(unknown)}")
    return dataclasses.replace(profile, **changes)


def profile_from(fields: dict) -> Profile | None:
    """The Profile a run record describes (its ``profile`` dict), or None when the dict is incomplete."""
    # A field added since the record was written takes its default (e.g. model_seeds: 1).
    names = {f.name for f in dataclasses.fields(Profile)
             if f.default is dataclasses.MISSING or f.name in fields}
    if not names <= set(fields):
        return None
    values = {k: fields[k] for k in names}
    return Profile(**{**values, "contract_archs": tuple(values["contract_archs"])})
