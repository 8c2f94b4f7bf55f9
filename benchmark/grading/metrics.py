"""How each Quantus metric is built and post-processed: every setting as data, so a fingerprint can hash it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmark.profiles import Profile, scale_px

# Noise radius in [0, 1] pixel units: small enough that the graded predictions do not change.
NOISE = 0.02


def as_scores(out) -> np.ndarray:
    """Quantus' per-sample output as float64 scores."""
    return np.asarray(out, dtype=np.float64)


def mprt_average(out: dict) -> np.ndarray:
    """Per-sample mean similarity over the randomised layers, without the unrandomised entry; NaN for a sample whose
    map collapsed to a constant at any layer (its similarity curve is undefined there).

    Quantus' own average includes the unrandomised entry (it checks for "orig", stores "original"): field notes.
    """
    layers = [np.asarray(v, dtype=np.float64) for k, v in out.items() if k not in ("original", "orig")]
    return np.mean(np.stack(layers), axis=0)


def mean_curve(out) -> np.ndarray:
    """Region-perturbation curves (N, steps) to one number per sample: the mean over the steps (AOPC)."""
    return np.asarray(out, dtype=np.float64).reshape(len(out), -1).mean(axis=1)


# Why a NaN from the similarities below is an outcome, not an error (MetricSpec.collapse).
COLLAPSE = "the map is constant after randomisation, so its rank similarity to the original is undefined"
# Why EfficientMPRT's NaN is an outcome, not an error (MetricSpec.collapse; LearnableEfficientMPRT.evaluate_instance).
COLLAPSE_RISE = ("the map is constant on the original model (its relative rise in entropy divides by 0) or on the "
                 "randomised one (collapsed, as MPRT counts it)")
# Why a constant graded map is an outcome of a map-only metric, not a score (MetricSpec.collapse): Quantus gives it
# NaN (mass 0/0, AUC's normalisation) or an arbitrary number (the pointing game's argmax and the rank order of ties
# pick the first pixel), so it is marked NaN for every map-only metric alike.
POINTS_NOWHERE = "the map is constant (a ReLU-clipped map with no positive evidence), so where it points is undefined"


def nan_where_constant(scores: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """``scores`` with NaN for each image whose map is constant (the same value at every pixel)."""
    flat = np.asarray(maps).reshape(len(maps), -1)
    constant = flat.max(axis=1) == flat.min(axis=1)
    return np.where(constant, np.nan, np.asarray(scores, dtype=np.float64))


def spearman_or_collapsed(a: np.ndarray, b: np.ndarray, batched: bool = False, **kwargs):
    """Spearman rank correlation of each map pair; NaN where either map is constant (collapsed).

    A map that collapses to a constant (a ReLU-clipped map gone all-zero) has no rank structure: it is neither
    similar (1) nor unrelated (0) to the original, so it is counted as its own outcome, not scored. A map with
    NaN or inf values is a broken method and raises.
    """
    from scipy.stats import rankdata  # lazy: ~0.45 s (measured); properties and verdict import this module

    a2 = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b2 = np.atleast_2d(np.asarray(b, dtype=np.float64))
    a2, b2 = a2.reshape(len(a2), -1), b2.reshape(len(b2), -1)
    if not (np.isfinite(a2).all() and np.isfinite(b2).all()):
        raise ValueError("an explanation has NaN or inf values; the rank similarity needs finite maps")
    ra, rb = rankdata(a2, axis=1), rankdata(b2, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    denom = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom > 0, (ra * rb).sum(1) / np.where(denom > 0, denom, 1.0), np.nan)
    return r if batched else float(r[0])


def normalise_by_own_max(a: np.ndarray, normalise_axes=None) -> np.ndarray:
    """Each explanation divided by its own max |a|, an all-zero one left at zero (Quantus' gives it 0/0 = NaN)."""
    axes = tuple(range(np.ndim(a))) if normalise_axes is None else tuple(normalise_axes)
    peak = np.max(np.abs(a), axis=axes, keepdims=True)
    return np.divide(a, peak, out=np.zeros_like(a), where=peak > 0)


# For the rank similarities: a ReLU-clipped map that goes all-zero on a randomised model must reach
# spearman_or_collapsed as a constant (COLLAPSE), not as the NaN Quantus' normalise_by_max makes of it whenever
# another map in the batch is non-zero, which the similarity rightly refuses as a broken map.
ZERO_SAFE = {"normalise_func": normalise_by_own_max, "normalise_func_kwargs": {"normalise_axes": (1, 2, 3)}}


def _common() -> dict:
    # Every metric scores |a|, each map normalised by its own max (not the batch's: field notes).
    # Lazy, as every Quantus import here: Quantus costs ~2.9 s (measured); properties and verdict import this module.
    from benchmark.grading.quantus_compat import per_sample_normalisation

    return {"abs": True, "normalise": True, **per_sample_normalisation(), "disable_warnings": True}


def _resolve(cls: str | Callable) -> Callable:
    if callable(cls):
        return cls
    module, _, name = cls.partition(":")
    if module == "quantus":
        from benchmark.grading.quantus_compat import quantus  # lazy: see _common

        return getattr(quantus, name)
    return getattr(importlib.import_module(module), name)


def _describe(value: Any) -> Any:
    # JSON-able form of a setting: functions and classes by their dotted name, containers element-wise.
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if callable(value):
        module = getattr(value, "__module__", "?")
        # The project's own functions by name alone: moving a module is no change in what a property computes,
        # and a dotted path would make every recorded fingerprint stale (UNVERSIONED) after a refactor.
        module = "benchmark" if module.split(".")[0] == "benchmark" else module
        return f"{module}.{getattr(value, '__qualname__', repr(value))}"
    return value


@dataclass(frozen=True)
class Recipe:
    """One metric's class and every setting it is built with; the benchmark's common settings are added."""

    cls: str | Callable  # "quantus:Name", "package.module:Name", or a factory (test doubles)
    settings: dict = field(default_factory=dict, hash=False)  # constant keyword arguments
    scaled: Callable[[Profile], dict] | None = None  # keyword arguments that depend on the profile
    seeded: bool = False  # takes the run's seed (its own random draws)
    postprocess: Callable[[Any], np.ndarray] = as_scores
    common: bool = True  # add |a|, per-sample max normalisation and quiet warnings
    # The metric whose scores ``cls`` reproduces (a faster implementation held to it by tests): what the property
    # fingerprint names, so an implementation that gives the same scores does not count as a changed property.
    reproduces: str | None = None

    def kwargs(self, profile: Profile) -> dict:
        """Every keyword argument for ``profile``, except the seed."""
        return {**(_common() if self.common else {}), **self.settings, **(self.scaled(profile) if self.scaled else {})}

    def build(self, profile: Profile, seed: int):
        """The configured metric object."""
        return _resolve(self.cls)(**self.kwargs(profile), **({"seed": seed} if self.seeded else {}))

    def describe(self, profile: Profile) -> dict:
        """Every setting for ``profile`` as JSON-able data (what a property fingerprint hashes)."""
        return {"cls": self.reproduces or _describe(self.cls), "kwargs": _describe(self.kwargs(profile)),
                "seeded": self.seeded, "postprocess": _describe(self.postprocess)}


def standard(name: str, **settings) -> Recipe:
    """A Quantus metric with only the common settings (and ``settings``)."""
    return Recipe(f"quantus:{name}", settings)


def _noise_samples(profile: Profile) -> dict:
    return {"nr_samples": 8 if profile.method_level == "cheap" else 20}


def _patch(profile: Profile) -> int:
    return scale_px(4, profile.image_size)


def _faithfulness_correlation_scaled(profile: Profile) -> dict:
    # Quantus' subset of 224 features was sized for 224 px ImageNet; keep the same ~7 % of the C·H·W
    # values at our sizes. 50 random subsets in the cheap level, Bhatt et al.'s 100 otherwise.
    return {"nr_runs": 50 if profile.method_level == "cheap" else 100,
            "subset_size": 224 * (profile.image_size // 32) ** 2}


def _region_perturbation_scaled(profile: Profile) -> dict:
    # Patch-sized steps (H·W/patch² forwards, not C·H·W); the most relevant quarter of the image is removed.
    patch = _patch(profile)
    return {"patch_size": patch, "regions_evaluation": (profile.image_size // patch) ** 2 // 4}


def _selectivity_scaled(profile: Profile) -> dict:
    return {"patch_size": _patch(profile)}


def _uniform_noise():
    from quantus.functions.perturb_func import batch_uniform_noise  # lazy: see _common

    return batch_uniform_noise


def _lipschitz_scaled(profile: Profile) -> dict:
    # Its default is Gaussian noise; the property promises uniform ±NOISE, the draws Max/AvgSensitivity
    # make. Seeded alike, the metrics then ask for the same noisy inputs and the explanation memo answers
    # them once (benchmarks/RESULTS.md).
    return {**_noise_samples(profile), "perturb_func": _uniform_noise()}


MPRT = Recipe("benchmark.grading.quantus_adapters:LearnableMPRT",
              {"layer_order": "top_down", "similarity_func": spearman_or_collapsed, **ZERO_SAFE},
              seeded=True, postprocess=mprt_average)
# ZERO_SAFE: an all-zero map stays a constant map for the adapter to mark collapsed (Quantus' normalisation makes it NaN).
EFFICIENT_MPRT = Recipe("benchmark.grading.quantus_adapters:LearnableEfficientMPRT",
                        {"layer_order": "bottom_up", "skip_layers": True, **ZERO_SAFE}, seeded=True)


def _smooth_mprt_scaled(profile: Profile) -> dict:
    # Hedström et al.'s ImageNet setting (Quantus' default) is 50 samples; the cheap level averages 5 (4 noisy copies
    # and the noise-free one), so a cell costs about 9 explanation batches, twice MPRT's 5 on the quick CNN.
    return {"nr_samples": 5 if profile.method_level == "cheap" else 50}


# Denoised maps, original model against every learnable layer randomised (skip_layers with the last correlation: the
# fully randomised model, as in the paper; the order of the resets does not change that model). Noise sd: 0.1 of each
# image's range, the paper's and Quantus' default, drawn once per input (seeded) and shared by both models, unlike
# Quantus' independent draws (see LearnableSmoothMPRT). The similarity treats a collapsed map as MPRT does.
SMOOTH_MPRT = Recipe("benchmark.grading.quantus_adapters:LearnableSmoothMPRT",
                     {"layer_order": "bottom_up", "skip_layers": True, "return_last_correlation": True,
                      "noise_magnitude": 0.1, "similarity_func": spearman_or_collapsed, **ZERO_SAFE},
                     scaled=_smooth_mprt_scaled, seeded=True)
# Quantus defaults to 1000 classes and crashes on our 2-class models (field notes).
RANDOM_LOGIT = Recipe("quantus:RandomLogit", {"num_classes": 2, "similarity_func": spearman_or_collapsed, **ZERO_SAFE},
                      seeded=True)
# Quantus' default perturbation (batch_uniform_noise) draws from [-lower_bound, lower_bound].
MAX_SENSITIVITY = Recipe("quantus:MaxSensitivity", {"lower_bound": NOISE}, scaled=_noise_samples)
AVG_SENSITIVITY = Recipe("quantus:AvgSensitivity", {"lower_bound": NOISE}, scaled=_noise_samples)
LOCAL_LIPSCHITZ = Recipe("quantus:LocalLipschitzEstimate", {"perturb_func_kwargs": {"lower_bound": NOISE}},
                         scaled=_lipschitz_scaled)
# Its default draws from [0.02, 0.2]; ask for the same symmetric ±NOISE as the other metrics.
RELATIVE_INPUT_STABILITY = Recipe(
    "quantus:RelativeInputStability",
    {"perturb_func_kwargs": {"lower_bound": -NOISE, "upper_bound": NOISE}, "return_nan_when_prediction_changes": False},
    scaled=_noise_samples)
# The same draws as RelativeInputStability (so the explanation memo answers them), the map's change relative to the
# logits' change in the numerically stable form of quantus_adapters.relative_output_stability; eps_min is Quantus' and
# the paper's floor.
RELATIVE_OUTPUT_STABILITY = Recipe(
    "benchmark.grading.quantus_adapters:RelativeOutputStability",
    {"perturb_func_kwargs": {"lower_bound": -NOISE, "upper_bound": NOISE}, "return_nan_when_prediction_changes": False,
     "eps_min": 1e-6},
    scaled=_noise_samples)
# Every sample's ROC AUC at once (Quantus calls sklearn once per sample), same scores.
AUC = Recipe("benchmark.grading.quantus_adapters:AUC", reproduces="quantus:AUC")
RELEVANCE_RANK_ACCURACY = Recipe("benchmark.grading.quantus_adapters:RelevanceRankAccuracy",
                                 reproduces="quantus:RelevanceRankAccuracy")
# Quantus' perturbation metrics with every step predicted in large batches (benchmark.grading.batching), same scores.
FAITHFULNESS_CORRELATION = Recipe("benchmark.grading.quantus_adapters:FaithfulnessCorrelation",
                                  {"perturb_baseline": "black", "return_aggregate": False},
                                  scaled=_faithfulness_correlation_scaled, reproduces="quantus:FaithfulnessCorrelation")
REGION_PERTURBATION = Recipe("benchmark.grading.quantus_adapters:RegionPerturbation",
                             {"order": "morf", "perturb_baseline": "black"}, scaled=_region_perturbation_scaled,
                             postprocess=mean_curve, reproduces="quantus:RegionPerturbation")
SELECTIVITY = Recipe("benchmark.grading.quantus_adapters:Selectivity", {"perturb_baseline": "black"},
                     scaled=_selectivity_scaled, postprocess=mean_curve, reproduces="quantus:Selectivity")
ROAD = Recipe("benchmark.grading.quantus_adapters:ROAD", {"noise": 0.01})
IROF = Recipe("benchmark.grading.quantus_adapters:IROF")
