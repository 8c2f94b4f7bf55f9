"""Each suite's property as data: metrics, directions, thresholds, controls to beat, validity checks."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmark.errors import ConfigError, did_you_mean
from benchmark.profiles import Profile

HIGHER, LOWER = "higher", "lower"
ARROW = {HIGHER: "↑", LOWER: "↓"}
FALSE_ALARM = "control model"  # pseudo-control: the same method explaining the control model


@dataclass(frozen=True)
class MetricSpec:
    """One Quantus metric as used by a suite, with its direction and pass threshold."""

    name: str
    direction: str  # HIGHER or LOWER is better
    threshold: float
    bounds: tuple[float, float]  # range a threshold may take
    build: Callable[..., Any]  # (profile, seed, **extra) -> configured Quantus metric
    reference: str
    needs_explain: bool = False  # Quantus re-explains inputs (randomisation, robustness)
    postprocess: Callable[[Any], np.ndarray] = field(default=lambda out: np.asarray(out, dtype=np.float64))
    # How far the mean may move the wrong way before compare mode calls it a regression; None: the default
    # of benchmark.baseline.tolerance (5% of a bounded metric's range, else 10% of the threshold).
    tolerance: float | None = None
    # Scored and reported, but not a vote in the property's verdict (INFO cells); the reason says why.
    no_vote: str = ""
    # Classes the model needs for the metric to be defined; below it every cell is N/A with this reason.
    min_classes: int = 2
    min_classes_reason: str = ""

    def meets(self, value: float) -> bool:
        """Whether ``value`` is on the good side of the threshold."""
        return value >= self.threshold if self.direction == HIGHER else value <= self.threshold


@dataclass(frozen=True)
class Validity:
    """What the controls must show for a metric to be informative in a run.

    ``separates``: ``good`` scores significantly better than ``bad``. ``flags``: the whole CI of
    ``bad`` lies on the failing side of the threshold.
    """

    kind: str  # "separates" | "flags"
    bad: str
    good: str | None = None

    def describe(self) -> str:
        """Human form, e.g. 'Oracle > Random'."""
        return f"{self.good} beats {self.bad}" if self.kind == "separates" else f"{self.bad} fails"


@dataclass(frozen=True)
class Property:
    """A property a good explanation must have, graded by several metrics against controls."""

    key: str
    name: str
    version: str
    description: str
    metrics: tuple[MetricSpec, ...]
    beat: tuple[str, ...]  # control methods a method must beat with statistical support
    false_alarm: bool  # also beat the same method on the control model (model-dependent methods)
    validity: tuple[Validity, ...]
    informational: bool = False  # cells report scores (INFO) but never pass/fail nor count in the ranking
    not_applicable: Callable[[Any], str | None] = field(default=lambda caps: None)

    def metric(self, name: str) -> MetricSpec:
        """Look a metric up by name (ConfigError with a suggestion when unknown)."""
        for m in self.metrics:
            if m.name == name:
                return m
        names = [m.name for m in self.metrics]
        raise ConfigError(f"Unknown metric {name!r} in {self.key}; choose one of {names}.{did_you_mean(name, names)}")

    def with_thresholds(self, overrides: dict[str, float]) -> Property:
        """Copy with some thresholds replaced; each must be finite and within the metric's bounds."""
        import dataclasses

        new = []
        for m in self.metrics:
            if m.name in overrides:
                t = overrides[m.name]
                if not isinstance(t, (int, float)) or not math.isfinite(t) or not m.bounds[0] <= t <= m.bounds[1]:
                    raise ConfigError(
                        f"Threshold {t!r} for {m.name} is invalid: give a finite number in "
                        f"[{m.bounds[0]}, {m.bounds[1]}] ({ARROW[m.direction]} {m.direction} is better)."
                    )
                m = dataclasses.replace(m, threshold=float(t))
            new.append(m)
        return dataclasses.replace(self, metrics=tuple(new))


def _q():
    from benchmark.quantus_compat import per_sample_normalisation, quantus

    return quantus, per_sample_normalisation()


def _standard(cls_name: str, **kw):
    # A Quantus metric with the benchmark's common settings (|a|, per-sample max normalisation) and ``kw``.
    def build(profile: Profile, seed: int, **extra):
        quantus, norm = _q()
        return getattr(quantus, cls_name)(abs=True, normalise=True, **norm, disable_warnings=True, **kw, **extra)

    return build


def _mprt_average(out: dict) -> np.ndarray:
    # Quantus' own average includes the unrandomised entry (it checks for "orig", stores "original"):
    # average the per-layer similarities ourselves, excluding it (field notes).
    layers = [np.asarray(v, dtype=np.float64) for k, v in out.items() if k not in ("original", "orig")]
    return np.mean(np.stack(layers), axis=0)


def spearman_or_zero(a: np.ndarray, b: np.ndarray, batched: bool = False, **kwargs):
    """Spearman rank correlation; 0 where either map is constant (e.g. a ReLU-clipped map gone all-zero).

    Quantus returns NaN there, but a map that collapses to a constant shares no rank structure with
    the original: it changed, which is what the randomisation test asks for.
    """
    from scipy.stats import rankdata

    a2 = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b2 = np.atleast_2d(np.asarray(b, dtype=np.float64))
    ra, rb = rankdata(a2, axis=1), rankdata(b2, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    denom = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom > 0, (ra * rb).sum(1) / np.where(denom > 0, denom, 1.0), 0.0)
    return r if batched else float(r[0])


def _build_mprt(profile: Profile, seed: int):
    quantus, norm = _q()
    from benchmark.quantus_adapters import LearnableMPRT

    return LearnableMPRT(
        layer_order="top_down", seed=seed, abs=True, normalise=True, **norm,
        similarity_func=spearman_or_zero, disable_warnings=True,
    )


def _build_emprt(profile: Profile, seed: int):
    quantus, norm = _q()
    from benchmark.quantus_adapters import LearnableEfficientMPRT

    return LearnableEfficientMPRT(
        layer_order="bottom_up", seed=seed, abs=True, normalise=True, **norm, skip_layers=True, disable_warnings=True,
    )


def _build_random_logit(profile: Profile, seed: int):
    quantus, norm = _q()
    # Quantus defaults to 1000 classes and crashes on our 2-class models (field notes).
    return quantus.RandomLogit(
        num_classes=2, seed=seed, abs=True, normalise=True, **norm,
        similarity_func=spearman_or_zero, disable_warnings=True,
    )


def _noise_samples(profile: Profile) -> int:
    return 8 if profile.method_level == "cheap" else 20


# Noise radius in [0, 1] pixel units: small enough that the graded predictions do not change.
NOISE = 0.02


def _build_sensitivity(cls_name: str):
    def build(profile: Profile, seed: int):
        quantus, norm = _q()
        # Quantus' default perturbation (batch_uniform_noise) draws from [-lower_bound, lower_bound].
        return getattr(quantus, cls_name)(
            nr_samples=_noise_samples(profile), lower_bound=NOISE, abs=True, normalise=True, **norm,
            disable_warnings=True,
        )

    return build


def _build_lipschitz(profile: Profile, seed: int):
    quantus, norm = _q()
    from quantus.functions.perturb_func import batch_uniform_noise

    # Its default is Gaussian noise; the property promises uniform ±NOISE, the draws Max/AvgSensitivity
    # make. Seeded alike, the metrics then ask for the same noisy inputs and the explanation memo answers
    # them once (benchmarks/RESULTS.md).
    return quantus.LocalLipschitzEstimate(
        nr_samples=_noise_samples(profile), perturb_func=batch_uniform_noise, perturb_func_kwargs={"lower_bound": NOISE},
        abs=True, normalise=True, **norm, disable_warnings=True,
    )


def _build_ris(profile: Profile, seed: int):
    quantus, norm = _q()
    return quantus.RelativeInputStability(
        nr_samples=_noise_samples(profile), abs=True, normalise=True, **norm,
        # Its default draws from [0.02, 0.2]; ask for the same symmetric ±NOISE as the other metrics.
        perturb_func_kwargs={"lower_bound": -NOISE, "upper_bound": NOISE},
        return_nan_when_prediction_changes=False, disable_warnings=True,
    )


def _oracle_only_for_localisation(caps) -> str | None:
    return "needs the ground-truth mask, which only the localisation suite has" if caps.oracle else None


LOCALISATION = Property(
    key="watermark_localisation",
    name="Watermark localisation on flipped predictions",
    # v2: TopKIntersection (k = mask size: RelevanceRankAccuracy again) and AttributionLocalisation (on |a|:
    # RelevanceMassAccuracy again) dropped, so no measurement votes twice; CIs are studentised bootstrap; the threshold is
    # judged on the CI like the controls.
    version="2",
    description=(
        "Stamped test cats that the biased model now calls 'dog': the explanation of 'dog' must sit on "
        "the watermark, beat the random and Sobel controls, and beat the same method on the control model."
    ),
    # Thresholds sit at about twice a random map's chance level (the mark covers ~10% of the image).
    metrics=(
        MetricSpec("RelevanceMassAccuracy", HIGHER, 0.20, (0.0, 1.0), _standard("RelevanceMassAccuracy"),
                   "Arras et al. 2022, CLEVR-XAI, Information Fusion 81"),
        MetricSpec("RelevanceRankAccuracy", HIGHER, 0.20, (0.0, 1.0), _standard("RelevanceRankAccuracy"),
                   "Arras et al. 2022, CLEVR-XAI, Information Fusion 81"),
        # Hit or miss per image: one of quick's 16 images moves the mean by 0.0625, so compare mode
        # tolerates one image (0.1) rather than calling it a regression.
        MetricSpec("PointingGame", HIGHER, 0.50, (0.0, 1.0), _standard("PointingGame"),
                   "Zhang et al. 2018, Top-down neural attention by excitation backprop, IJCV", tolerance=0.1),
        MetricSpec("AUC", HIGHER, 0.70, (0.0, 1.0), _standard("AUC"), "Fawcett 2006, An introduction to ROC analysis"),
    ),
    beat=("Random", "Sobel"),
    false_alarm=True,
    validity=(Validity("separates", bad="Random", good="Oracle"),),
)

RANDOMISATION = Property(
    key="randomisation",
    name="Sensitivity to model randomisation",
    # v2: the MPRT family randomises learnable weights only (conv and linear layers), not BatchNorm resets;
    # RandomLogit is N/A on a two-class model; CIs are studentised bootstrap; the threshold is judged on the CI.
    # v3: a positive control: ModelSeededRandom (redrawn by any weight change) must beat Sobel.
    version="3",
    description=(
        "Explanations must change when the model's weights are randomised; maps that survive it "
        "(like an edge detector) do not explain the model."
    ),
    metrics=(
        MetricSpec("MPRT", LOWER, 0.50, (-1.0, 1.0), _build_mprt,
                   "Adebayo et al. 2018, Sanity checks for saliency maps, NeurIPS", needs_explain=True,
                   postprocess=_mprt_average),
        MetricSpec("EfficientMPRT", HIGHER, 0.05, (-10.0, 10.0), _build_emprt,
                   "Hedström et al. 2023, Sanity checks revisited, XAI in Action workshop", needs_explain=True,
                   tolerance=0.05),  # scores span about [-1, 1.1] on the quick grid: 10% of the threshold is noise
        MetricSpec("RandomLogit", LOWER, 0.50, (-1.0, 1.0), _build_random_logit,
                   "Sixt et al. 2020, When explanations lie: why many modified BP attributions fail, ICML",
                   needs_explain=True, min_classes=3, min_classes_reason=(
                       "RandomLogit explains a random other class; on a two-class model that is always the one "
                       "other class, whose logit row is near anti-parallel to the explained one, so |map| barely "
                       "changes for any method (a degenerate test); it needs at least 3 classes")),
    ),
    beat=("Random", "Sobel"),
    false_alarm=False,
    # Negative: the Sobel edge map ignores the model, so it must fail. Positive: a random map seeded by the
    # weights' hash changes completely under randomisation, so the metric must score it better than Sobel.
    validity=(Validity("flags", bad="Sobel"), Validity("separates", bad="Sobel", good="ModelSeededRandom")),
    not_applicable=_oracle_only_for_localisation,
)

NOISE_STABILITY = Property(
    key="noise_stability",
    name="Stability under input noise",
    # v2: LocalLipschitzEstimate draws the property's uniform noise instead of Gaussian (threshold 6 -> 10).
    # v3: RelativeInputStability reported, not voted (float noise); CIs are studentised bootstrap; the threshold is judged on the CI.
    # v4: a positive control: FixedPattern (no input change moves it) must beat Random.
    version="4",
    description=(
        f"Uniform noise of ±{NOISE} (pixel range [0, 1]) that keeps the prediction must barely change the "
        "explanation; it must be clearly more stable than a random map."
    ),
    # Thresholds sit at about half a random map's value: two independent uniform maps, max-normalised,
    # differ by sqrt(1/2) of their norm (Max/AvgSensitivity), and LocalLipschitz scales with 1/|noise|
    # (the random map scored 21.0 [20.6, 21.3] on the quick world, seed 0).
    metrics=(
        MetricSpec("MaxSensitivity", LOWER, 0.35, (0.0, 1e6), _build_sensitivity("MaxSensitivity"),
                   "Yeh et al. 2019, On the (in)fidelity and sensitivity of explanations, NeurIPS", needs_explain=True),
        MetricSpec("AvgSensitivity", LOWER, 0.35, (0.0, 1e6), _build_sensitivity("AvgSensitivity"),
                   "Yeh et al. 2019, On the (in)fidelity and sensitivity of explanations, NeurIPS", needs_explain=True),
        MetricSpec("LocalLipschitzEstimate", LOWER, 10.0, (0.0, 1e9), _build_lipschitz,
                   "Alvarez-Melis & Jaakkola 2018, On the robustness of interpretability methods, arXiv:1806.08049",
                   needs_explain=True),
        MetricSpec("RelativeInputStability", LOWER, 100.0, (0.0, 1e12), _build_ris,
                   "Agarwal et al. 2022, Rethinking stability for attribution-based explanations, arXiv:2203.06877",
                   needs_explain=True, no_vote=(
                       "it divides by the size of the input change, so float rounding alone moves per-image scores "
                       "by tens (the memory format moved one by 23 against a threshold of 100): a verdict must not "
                       "depend on the arithmetic")),
    ),
    beat=("Random",),
    false_alarm=False,
    # Negative: the input-seeded Random map is redrawn by any noise, so it must fail. Positive: a fixed map
    # no input change moves, which the metric must score as more stable than Random.
    validity=(Validity("flags", bad="Random"), Validity("separates", bad="Random", good="FixedPattern")),
    not_applicable=_oracle_only_for_localisation,
)

def _mean_curve(out) -> np.ndarray:
    # Region-perturbation curves (N, steps) -> one number per sample: the mean over the steps (AOPC).
    return np.asarray(out, dtype=np.float64).reshape(len(out), -1).mean(axis=1)


def _patch(profile: Profile) -> int:
    from benchmark.methods.base import scale_px

    return scale_px(4, profile.image_size)


def _build_faithfulness_correlation(profile: Profile, seed: int):
    quantus, norm = _q()
    # Quantus' subset of 224 features was sized for 224 px ImageNet; keep the same ~7 % of the C·H·W
    # values at our sizes. 50 random subsets in the cheap level, Bhatt et al.'s 100 otherwise.
    return quantus.FaithfulnessCorrelation(
        nr_runs=50 if profile.method_level == "cheap" else 100, subset_size=224 * (profile.image_size // 32) ** 2,
        perturb_baseline="black", abs=True, normalise=True, **norm, return_aggregate=False, disable_warnings=True,
    )


def _build_region_perturbation(profile: Profile, seed: int):
    quantus, norm = _q()
    patch = _patch(profile)
    # Patch-sized steps (H·W/patch² forwards, not C·H·W); the most relevant quarter of the image is removed.
    regions = (profile.image_size // patch) ** 2 // 4
    return quantus.RegionPerturbation(
        patch_size=patch, order="morf", regions_evaluation=regions, perturb_baseline="black", abs=True,
        normalise=True, **norm, disable_warnings=True,
    )


def _build_selectivity(profile: Profile, seed: int):
    quantus, norm = _q()
    return quantus.Selectivity(patch_size=_patch(profile), perturb_baseline="black", abs=True, normalise=True, **norm,
                               disable_warnings=True)


def _build_road(profile: Profile, seed: int):
    from benchmark.quantus_adapters import ROAD

    _, norm = _q()
    return ROAD(noise=0.01, abs=True, normalise=True, **norm, disable_warnings=True)


def _build_irof(profile: Profile, seed: int):
    from benchmark.quantus_adapters import IROF

    _, norm = _q()
    return IROF(abs=True, normalise=True, **norm, disable_warnings=True)


FAITHFULNESS = Property(
    key="faithfulness",
    name="Faithfulness to the model's output",
    # v2: CIs are studentised bootstrap; the threshold is judged on the CI like the controls.
    # v3: the positive control is the oracle mask (the flipped decision hinges on it), not Occlusion, a graded method.
    version="3",
    description=(
        "Removing what the explanation calls relevant must change the model's 'dog' score more than removing "
        "what it calls irrelevant; the method must clearly beat a random map and the Sobel edge map."
    ),
    # Thresholds sit well above a random map's value on the quick world (measured, 16 flipped cats):
    # FaithfulnessCorrelation ~0, RegionPerturbation AOPC ~0.34, Selectivity ~0.24 (lower is better),
    # ROAD ~0, IROF ~0.42.
    metrics=(
        MetricSpec("FaithfulnessCorrelation", HIGHER, 0.10, (-1.0, 1.0), _build_faithfulness_correlation,
                   "Bhatt et al. 2020, Evaluating and aggregating feature-based model explanations, IJCAI"),
        # Per sample: mean drop of p(dog) over the MoRF steps (AOPC), higher is better.
        MetricSpec("RegionPerturbation", HIGHER, 0.50, (-1.0, 1.0), _build_region_perturbation,
                   "Samek et al. 2017, Evaluating the visualization of what a deep neural network has learned, "
                   "IEEE TNNLS", postprocess=_mean_curve),
        # Per sample: mean p(dog) over the curve as patches go most relevant first (normalised AUC), lower is better.
        MetricSpec("Selectivity", LOWER, 0.20, (0.0, 1.0), _build_selectivity,
                   "Montavon et al. 2018, Methods for interpreting and understanding deep neural networks, DSP",
                   postprocess=_mean_curve),
        # Per sample: mean over 10..90 % removed of p(dog) LeRF - MoRF under noisy linear imputation.
        MetricSpec("ROAD", HIGHER, 0.10, (-1.0, 1.0), _build_road,
                   "Rong et al. 2022, A consistent and efficient evaluation strategy for attribution methods, ICML"),
        MetricSpec("IROF", HIGHER, 0.50, (0.0, 1.0), _build_irof,
                   "Rieger & Hansen 2020, IROF: a low resource evaluation metric for explanation methods, "
                   "ICLR workshop"),
    ),
    beat=("Random", "Sobel"),
    false_alarm=False,
    # Positive control: the watermark mask on flipped images, where the model's decision hinges on the
    # watermark, so removing what the mask marks must drop p(dog) first; it is a control, never a graded method
    # (Occlusion was the reference before, and it is graded). Negative control: the random map.
    validity=(Validity("separates", bad="Random", good="Oracle"),),
)


COMPLEXITY = Property(
    key="complexity",
    name="Complexity of the explanation (informational)",
    # v2: CIs are studentised bootstrap.
    version="2",
    description=(
        "How concentrated the map is. Informational: a concise map is easier to read but not more correct "
        "(the oracle mask is the sparsest map, a random map the densest), so these cells report "
        "scores and neither pass nor fail, and the property does not count in the overall ranking."
    ),
    # Reference lines only (never applied): about halfway between the random map and the oracle mask.
    metrics=(
        MetricSpec("Sparseness", HIGHER, 0.60, (0.0, 1.0), _standard("Sparseness"),
                   "Chalasani et al. 2020, Concise explanations of neural networks using adversarial training, ICML"),
        MetricSpec("Complexity", LOWER, 6.0, (0.0, 1e6), _standard("Complexity"),
                   "Bhatt et al. 2020, Evaluating and aggregating feature-based model explanations, IJCAI"),
    ),
    beat=("Random",),
    false_alarm=False,
    # The mask (a few percent of the pixels) must read as far more concentrated than uniform noise.
    validity=(Validity("separates", bad="Random", good="Oracle"),),
    informational=True,
)

PROPERTIES: dict[str, Property] = {
    p.key: p for p in (LOCALISATION, RANDOMISATION, NOISE_STABILITY, FAITHFULNESS, COMPLEXITY)
}


def get_property(key: str) -> Property:
    """A registered property by key (ConfigError with a suggestion when unknown)."""
    if key not in PROPERTIES:
        raise ConfigError(f"Unknown property {key!r}; choose one of {sorted(PROPERTIES)}.{did_you_mean(key, PROPERTIES)}")
    return PROPERTIES[key]
