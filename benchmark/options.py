"""Run options (seed, data source, cache and device), kept free of torch for the plugin."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from benchmark.data import DataSpec
from benchmark.data.watermark import WatermarkSpec, footprint_fraction
from benchmark.errors import ConfigError


@dataclass(frozen=True)
class BenchOptions:
    """User-facing choices that, with the profile, determine every artefact."""

    seed: int = 0
    data_source: str = "procedural"
    data_root: str | None = None
    cache_root: Path = Path(".")
    device: str | None = None
    cell_timeout_s: float | None = None  # overrides the profile's per-cell limit; 0 = no limit
    channels_last: bool | None = None  # explain channels-last copies (None: on for the CPU, off on CUDA)
    # No-grad forwards of the perturbation methods and metrics through frozen, fused copies (None: on for the CPU,
    # off on CUDA, where it is unmeasured); scores move by float rounding only.
    fused_inference: bool | None = None
    # The watermark's strength (a level of the strength sweep, see benchmark.running.sweep); None: the default mark.
    mark: MarkLevel | None = None
    # Training seeds per model arm (None: the profile's count); the cells' CIs then cover seeds as well as images.
    model_seeds: int | None = None

    def data_spec(self, profile):
        """The dataset spec (:class:`benchmark.data.DataSpec`) this profile and these options ask for."""
        spec = DataSpec(
            source=self.data_source, root=self.data_root, image_size=profile.image_size,
            n_train=profile.n_train, n_test=profile.n_test, seed=self.seed,
        )
        if self.mark is None:
            return spec
        return spec.replace(watermark=self.mark.watermark(profile.image_size))


@dataclass(frozen=True, order=True)
class MarkLevel:
    """One watermark strength: the largest mark whose footprint is at most ``area`` of the image, at ``opacity``
    (levels order by area, then opacity: weakest first)."""

    area: float
    opacity: float = 1.0

    def watermark(self, size: int):
        """The :class:`benchmark.data.WatermarkSpec` of this level on size×size images (ConfigError if none fits)."""
        base = WatermarkSpec(opacity=self.opacity)
        fitting = [w for w in range(3, size) if footprint_fraction(base.replace(scale=w / size), size) <= self.area]
        if not fitting:
            smallest = footprint_fraction(base.replace(scale=3 / size), size)
            raise ConfigError(f"no mark covers at most {self.area:.2%} of a {size}-px image (the smallest, 3 px wide, "
                              f"covers {smallest:.2%}); choose a larger area or a larger image size")
        return base.replace(scale=max(fitting) / size)

    @property
    def label(self) -> str:
        """Short name, e.g. "2.5%" or "2.5% @ 0.5 opacity"."""
        return f"{100 * self.area:.3g}%" + ("" if self.opacity == 1.0 else f" @ {self.opacity:g} opacity")



def channels_last_on(choice: bool | None, device_type: str) -> bool:
    """Whether a run on ``device_type`` explains channels-last copies of its models: ``choice`` (the option), else on
    for the CPU."""
    return device_type == "cpu" if choice is None else choice


def fused_inference_on(choice: bool | None, device_type: str) -> bool:
    """Whether a run on ``device_type`` ("cpu", "cuda") forwards through fused copies: ``choice`` (the option), else
    on for the CPU."""
    return device_type == "cpu" if choice is None else choice


def model_seeds(profile, options: BenchOptions) -> list[int]:
    """The training seeds of the run's models: ``--bench-model-seeds`` (else the profile's count) from the run's seed."""
    k = options.model_seeds if options.model_seeds is not None else profile.model_seeds
    return [options.seed + i for i in range(k)]


def describe(options: BenchOptions) -> dict:
    """JSON-able form of the options for run records."""
    d = dataclasses.asdict(options)
    d["cache_root"] = str(d["cache_root"])
    return d
