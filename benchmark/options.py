"""Run options (seed, data source, cache and device), kept free of heavy imports for the plugin."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path


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

    def data_spec(self, profile):
        """The dataset spec (:class:`benchmark.data.DataSpec`) this profile and these options ask for."""
        from benchmark.data import DataSpec

        return DataSpec(
            source=self.data_source, root=self.data_root, image_size=profile.image_size,
            n_train=profile.n_train, n_test=profile.n_test, seed=self.seed,
        )



def describe(options: BenchOptions) -> dict:
    """JSON-able form of the options for run records."""
    d = dataclasses.asdict(options)
    d["cache_root"] = str(d["cache_root"])
    return d
