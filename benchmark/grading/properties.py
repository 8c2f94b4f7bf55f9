"""Each suite's property as data: what it asks, which metrics vote, and the controls that anchor its verdicts.

How a metric is built lives in :mod:`benchmark.grading.metrics`; how scores become verdicts, in :mod:`benchmark.grading.verdict`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmark.errors import ConfigError, did_you_mean
from benchmark.grading import metrics as mx
from benchmark.grading.metrics import Recipe
from benchmark.profiles import Profile

HIGHER, LOWER = "higher", "lower"
ARROW = {HIGHER: "↑", LOWER: "↓"}
FALSE_ALARM = "control model"  # pseudo-control: the same method explaining the control model
ABSENT_ALARM = "absent model"  # pseudo-control: the same method explaining the model that never saw a mark
FALSE_ALARMS = {"control": FALSE_ALARM, "absent": ABSENT_ALARM}  # model arm -> its name among the controls
# A method passes a metric when its skill (0 = the negative control, 1 = the positive control, both measured in
# the same run on the same images) is at least this with 95% confidence: closer to the control that has the
# property than to the one that lacks it.
PASS_LEVEL = 0.5


@dataclass(frozen=True)
class MetricSpec:
    """One Quantus metric as a suite uses it: direction, range, recipe, and how compare mode and the vote treat it."""

    name: str
    direction: str  # HIGHER or LOWER is better
    bounds: tuple[float, float]  # range of the scores, and of a threshold override
    recipe: Recipe
    reference: str
    needs_explain: bool = False  # Quantus re-explains inputs (randomisation, robustness)
    # Its re-explanations are noisy copies of the graded inputs on the graded model, which one batched call can
    # answer (the stability metrics); the randomisation metrics' are on a new model per layer.
    explains_draws: bool = False
    # How far the mean may move the wrong way before compare mode calls it a regression; None: 5% of a bounded
    # metric's range (width <= 2). Open-ended metrics declare theirs.
    tolerance: float | None = None
    # Scored and reported, but not a vote in the property's verdict (INFO cells); the reason says why.
    no_vote: str = ""
    # Classes the model needs for the metric to be defined; below it every cell is N/A with this reason.
    min_classes: int = 2
    min_classes_reason: str = ""
    # A fixed pass threshold in the metric's own units (--bench-threshold); None: anchored to the controls.
    threshold: float | None = None
    # Non-empty: a NaN per-image score means the image's map collapsed (this says why that leaves the score
    # undefined); such images are counted as an outcome of their own, not scored. Empty: a NaN is an ERROR.
    collapse: str = ""

    def build(self, profile: Profile, seed: int):
        """The configured Quantus metric."""
        return self.recipe.build(profile, seed)

    def postprocess(self, out: Any):
        """Quantus' output as one float per sample."""
        return self.recipe.postprocess(out)

    @property
    def sign(self) -> float:
        """+1 when higher is better, -1 when lower is: multiplies a difference so that better is positive."""
        return 1.0 if self.direction == HIGHER else -1.0


@dataclass(frozen=True)
class Property:
    """A property a good explanation must have, graded by several metrics and anchored to two constructed controls.

    ``negative`` lacks the property by construction and ``positive`` has it; a metric votes only when the
    positive control beats the negative one with statistical support in the run, and a method's skill on it
    is its score placed between the two (0 = negative, 1 = positive).
    """

    key: str
    name: str
    version: str
    description: str
    metrics: tuple[MetricSpec, ...]
    negative: str  # control map that lacks the property
    positive: str  # control map that has it
    beat: tuple[str, ...]  # controls a method must also beat with statistical support
    false_alarm: bool  # also beat the same method on the control and absent models (model-dependent methods)
    informational: bool = False  # cells report scores (INFO) but never pass/fail nor count in the ranking
    # Its metrics read only the maps and the mask (no model calls), so it grades every flipped image the profile
    # allows (Profile.n_map_only) instead of the n_eval subsample the model-calling properties grade.
    map_only: bool = False
    not_applicable: Callable[[Any], str | None] = field(default=lambda caps: None)
    pass_level: float = PASS_LEVEL

    @property
    def controls(self) -> frozenset[str]:
        """Every control this property scores: its two anchors and the controls a method must beat."""
        return frozenset({self.negative, self.positive, *self.beat})

    def metric(self, name: str) -> MetricSpec:
        """Look a metric up by name (ConfigError with a suggestion when unknown)."""
        for m in self.metrics:
            if m.name == name:
                return m
        names = [m.name for m in self.metrics]
        raise ConfigError(f"Unknown metric {name!r} in {self.key}; choose one of {names}.{did_you_mean(name, names)}")

    def with_thresholds(self, overrides: dict[str, float]) -> Property:
        """Copy with fixed thresholds for some metrics; each must be finite and within the metric's bounds."""
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

    def describe(self, profile: Profile, only: str | None = None) -> dict:
        """Everything that decides this property's verdicts on ``profile``, as data (hashed by compare mode); with
        ``only``, that metric's entry alone in "metrics"."""
        metrics = [m for m in self.metrics if only is None or m.name == only]
        return {
            "metrics": [{"name": m.name, "direction": m.direction, "bounds": list(m.bounds), "threshold": m.threshold,
                         "needs_explain": m.needs_explain, "no_vote": bool(m.no_vote), "min_classes": m.min_classes,
                         "collapse": bool(m.collapse), "recipe": m.recipe.describe(profile)} for m in metrics],
            "negative": self.negative, "positive": self.positive, "pass_level": self.pass_level,
            "beat": list(self.beat), "false_alarm": self.false_alarm, "informational": self.informational,
            "map_only": self.map_only,
        }


def _oracle_only_for_localisation(caps) -> str | None:
    return "needs the ground-truth mask, which only the localisation suite has" if caps.oracle else None


LOCALISATION = Property(
    key="watermark_localisation",
    name="Watermark localisation on flipped predictions",
    # v2: TopKIntersection (k = mask size: RelevanceRankAccuracy again) and AttributionLocalisation (on |a|:
    # RelevanceMassAccuracy again) dropped, so no measurement votes twice; CIs are studentised bootstrap.
    # v3: pass level anchored between the Random map (0) and the Oracle mask (1) of the same run, not hand-set;
    # every flipped image is graded (map-only metrics), not the first 16; PositionalPrior is a control to beat.
    # v4: the false alarm is also measured on the absent model, which never saw a mark.
    # v5: a constant map (GradCAM with no positive evidence, seen on the ViT) is collapsed, not scored: Quantus gave
    # it NaN (an ERROR cell) or an arbitrary pointing-game hit at the first pixel.
    version="5",
    description=(
        "Stamped test cats that the biased model now calls 'dog': the explanation of 'dog' must sit on "
        "the watermark, beat the random, Sobel and positional-prior controls, and beat the same method on the "
        "control model (mark present, class-independent) and on the absent model (never saw a mark)."
    ),
    metrics=(
        MetricSpec("RelevanceMassAccuracy", HIGHER, (0.0, 1.0), mx.standard("RelevanceMassAccuracy"),
                   "Arras et al. 2022, CLEVR-XAI, Information Fusion 81", collapse=mx.POINTS_NOWHERE),
        MetricSpec("RelevanceRankAccuracy", HIGHER, (0.0, 1.0), mx.RELEVANCE_RANK_ACCURACY,
                   "Arras et al. 2022, CLEVR-XAI, Information Fusion 81", collapse=mx.POINTS_NOWHERE),
        # Hit or miss per image: one of quick's 16 images moves the mean by 0.0625, so compare mode
        # tolerates one image (0.1) rather than calling it a regression.
        MetricSpec("PointingGame", HIGHER, (0.0, 1.0), mx.standard("PointingGame"),
                   "Zhang et al. 2018, Top-down neural attention by excitation backprop, IJCV", tolerance=0.1,
                   collapse=mx.POINTS_NOWHERE),
        MetricSpec("AUC", HIGHER, (0.0, 1.0), mx.AUC, "Fawcett 2006, An introduction to ROC analysis",
                   collapse=mx.POINTS_NOWHERE),
    ),
    # Negative: a random map (chance level, about the mark's share of the image). Positive: the mask itself.
    negative="Random",
    positive="Oracle",
    # PositionalPrior: the training set's mean mask, i.e. knowing where marks usually are without looking.
    beat=("Random", "Sobel", "PositionalPrior"),
    false_alarm=True,
    map_only=True,
)

RANDOMISATION = Property(
    key="randomisation",
    name="Sensitivity to model randomisation",
    # v2: the MPRT family randomises learnable weights only (conv and linear layers), not BatchNorm resets;
    # RandomLogit is N/A on a two-class model; CIs are studentised bootstrap; the threshold is judged on the CI.
    # v3: a positive control: ModelSeededRandom (redrawn by any weight change) must beat Sobel.
    # v4: pass level anchored between Sobel (0) and ModelSeededRandom (1) of the same run, not hand-set.
    # v5: a map that collapses to a constant after randomisation is its own outcome (COLLAPSED), not similarity 0.
    # v6: SmoothMPRT votes beside MPRT (learnable layers, denoised maps), so two measurements decide the property.
    # v7: SmoothMPRT explains the same noisy copies of each input on both models (common random numbers), so a
    # model-independent map no longer reads as changed.
    # v8: EfficientMPRT is reported, not voted: its controls' gap is too small for a skill scale (its no_vote).
    # v9: maps that go all-zero are COLLAPSED as v5 meant, not an ERROR: beside non-zero ones in a batch (the rank
    # similarities normalise each map with metrics.normalise_by_own_max) or all of a batch (the attribution asserts let
    # a collapse-scoring metric take them); GradCAM on three and five training seeds of a few images each.
    # v10: EfficientMPRT declares collapse too: a constant map's entropy rise was inf (x/0) or -1, and a batch of
    # all-zero maps an ERROR (GradCAM on a three-block ViT's training seed); its maps are normalised zero-safe.
    version="10",
    description=(
        "Explanations must change when the model's weights are randomised; maps that survive it "
        "(like an edge detector) do not explain the model."
    ),
    metrics=(
        MetricSpec("MPRT", LOWER, (-1.0, 1.0), mx.MPRT,
                   "Adebayo et al. 2018, Sanity checks for saliency maps, NeurIPS", needs_explain=True,
                   collapse=mx.COLLAPSE),
        # MPRT with each map denoised (a mean over noisy copies of the input) before the rank similarity, original
        # model against every learnable layer randomised: a map's sampling noise no longer reads as a change.
        MetricSpec("SmoothMPRT", LOWER, (-1.0, 1.0), mx.SMOOTH_MPRT,
                   "Hedström et al. 2023, Sanity checks revisited, XAI in Action workshop", needs_explain=True,
                   collapse=mx.COLLAPSE),
        MetricSpec("EfficientMPRT", HIGHER, (-10.0, 10.0), mx.EFFICIENT_MPRT,
                   "Hedström et al. 2023, Sanity checks revisited, XAI in Action workshop", needs_explain=True,
                   collapse=mx.COLLAPSE_RISE, tolerance=0.05, no_vote=(  # scores span about [-1, 1.1] on the quick grid
                       "its controls barely differ (Sobel 0.000 on every image, ModelSeededRandom under 0.001): on "
                       "one quick build they did not separate, on a retrain they did by a sign test and every "
                       "method's skill became hundreds (benchmarks/RESULTS.md, retrain reproducibility), so whether "
                       "it voted depended on the training run")),
        MetricSpec("RandomLogit", LOWER, (-1.0, 1.0), mx.RANDOM_LOGIT,
                   "Sixt et al. 2020, When explanations lie: why many modified BP attributions fail, ICML",
                   needs_explain=True, collapse=mx.COLLAPSE, min_classes=3, min_classes_reason=(
                       "RandomLogit explains a random other class; on a two-class model that is always the one "
                       "other class, whose logit row is near anti-parallel to the explained one, so |map| barely "
                       "changes for any method (a degenerate test); it needs at least 3 classes")),
    ),
    # Negative: the Sobel edge map ignores the model, so randomising the model leaves it as it was. Positive:
    # a random map seeded by the weights' hash, which any weight change redraws completely.
    negative="Sobel",
    positive="ModelSeededRandom",
    beat=("Random", "Sobel"),
    false_alarm=False,
    not_applicable=_oracle_only_for_localisation,
)

NOISE_STABILITY = Property(
    key="noise_stability",
    name="Stability under input noise",
    # v2: LocalLipschitzEstimate draws the property's uniform noise instead of Gaussian (threshold 6 -> 10).
    # v3: RelativeInputStability reported, not voted (float noise); CIs are studentised bootstrap.
    # v4: a positive control: FixedPattern (no input change moves it) must beat Random.
    # v5: pass level anchored between Random (0) and FixedPattern (1) of the same run, not hand-set.
    # v6: the negative control is NoisyGradient, one noisy-gradient sample redrawn per input (a real estimator a
    # method can resemble), not the Random map no real method comes near; RelativeOutputStability (the map's change
    # over the model's own output change) votes.
    version="6",
    description=(
        f"Uniform noise of ±{mx.NOISE} (pixel range [0, 1]) that keeps the prediction must barely change the "
        "explanation, relative to the input change and to the model's own output change: at most half as much as "
        "one noisy-gradient sample redrawn per input (NoisyGradient, skill 0; a fixed map is 1), and less than a "
        "random map."
    ),
    # Open-ended scores: compare mode's tolerance is about a tenth of a random map's value on the quick world.
    metrics=(
        MetricSpec("MaxSensitivity", LOWER, (0.0, 1e6), mx.MAX_SENSITIVITY,
                   "Yeh et al. 2019, On the (in)fidelity and sensitivity of explanations, NeurIPS", needs_explain=True, explains_draws=True,
                   tolerance=0.035),
        MetricSpec("AvgSensitivity", LOWER, (0.0, 1e6), mx.AVG_SENSITIVITY,
                   "Yeh et al. 2019, On the (in)fidelity and sensitivity of explanations, NeurIPS", needs_explain=True, explains_draws=True,
                   tolerance=0.035),
        MetricSpec("LocalLipschitzEstimate", LOWER, (0.0, 1e9), mx.LOCAL_LIPSCHITZ,
                   "Alvarez-Melis & Jaakkola 2018, On the robustness of interpretability methods, arXiv:1806.08049",
                   needs_explain=True, explains_draws=True, tolerance=1.0),
        MetricSpec("RelativeInputStability", LOWER, (0.0, 1e12), mx.RELATIVE_INPUT_STABILITY,
                   "Agarwal et al. 2022, Rethinking stability for attribution-based explanations, arXiv:2203.06877",
                   needs_explain=True, explains_draws=True, tolerance=10.0, no_vote=(
                       "it divides by the size of the input change, so float rounding alone moves per-image scores "
                       "by tens (the memory format moved one by 23): a verdict must not depend on the arithmetic")),
        # The map's relative change over the logits' change (Agarwal's ROS) in a numerically stable form: a method
        # whose explanation moves much more than the model's output does is unstable relative to the model.
        MetricSpec("RelativeOutputStability", LOWER, (0.0, 1e9), mx.RELATIVE_OUTPUT_STABILITY,
                   "Agarwal et al. 2022, Rethinking stability for attribution-based explanations, arXiv:2203.06877",
                   needs_explain=True, explains_draws=True, tolerance=10.0),  # NoisyGradient ~200, Saliency ~65
    ),
    # Negative: NoisyGradient, |gradient| at one Gaussian-noised copy (SmoothGrad's sd 0.15) whose noise any input
    # change redraws: the estimator SmoothGrad averages because one draw is unstable, and a map a real method can
    # resemble (the Random map was beaten by every real method with room to spare). Positive: a fixed map no input
    # change moves. Random stays a control to beat.
    negative="NoisyGradient",
    positive="FixedPattern",
    beat=("Random", "NoisyGradient"),
    false_alarm=False,
    not_applicable=_oracle_only_for_localisation,
)

FAITHFULNESS = Property(
    key="faithfulness",
    name="Faithfulness to the model's output",
    # v2: CIs are studentised bootstrap; the threshold is judged on the CI like the controls.
    # v3: the positive control is the oracle mask (the flipped decision hinges on it), not Occlusion, a graded method.
    # v4: pass level anchored between Random (0) and the Oracle mask (1) of the same run, not hand-set.
    version="4",
    description=(
        "Removing what the explanation calls relevant must change the model's 'dog' score more than removing "
        "what it calls irrelevant; the method must clearly beat a random map and the Sobel edge map."
    ),
    metrics=(
        MetricSpec("FaithfulnessCorrelation", HIGHER, (-1.0, 1.0), mx.FAITHFULNESS_CORRELATION,
                   "Bhatt et al. 2020, Evaluating and aggregating feature-based model explanations, IJCAI"),
        # Per sample: mean drop of p(dog) over the MoRF steps (AOPC), higher is better.
        MetricSpec("RegionPerturbation", HIGHER, (-1.0, 1.0), mx.REGION_PERTURBATION,
                   "Samek et al. 2017, Evaluating the visualization of what a deep neural network has learned, "
                   "IEEE TNNLS"),
        # Per sample: mean p(dog) over the curve as patches go most relevant first (normalised AUC), lower is better.
        MetricSpec("Selectivity", LOWER, (0.0, 1.0), mx.SELECTIVITY,
                   "Montavon et al. 2018, Methods for interpreting and understanding deep neural networks, DSP"),
        # Per sample: mean over 10..90 % removed of p(dog) LeRF - MoRF under noisy linear imputation.
        MetricSpec("ROAD", HIGHER, (-1.0, 1.0), mx.ROAD,
                   "Rong et al. 2022, A consistent and efficient evaluation strategy for attribution methods, ICML"),
        MetricSpec("IROF", HIGHER, (0.0, 1.0), mx.IROF,
                   "Rieger & Hansen 2020, IROF: a low resource evaluation metric for explanation methods, "
                   "ICLR workshop"),
    ),
    # Positive: the watermark mask on flipped images, where the model's decision hinges on the watermark, so
    # removing what the mask marks must drop p(dog) first; a control, never a graded method (Occlusion was the
    # reference before, and it is graded). Negative: the random map.
    negative="Random",
    positive="Oracle",
    beat=("Random", "Sobel"),
    false_alarm=False,
)


COMPLEXITY = Property(
    key="complexity",
    name="Complexity of the explanation (informational)",
    # v2: CIs are studentised bootstrap.
    # v3: scores placed between Random (0) and the Oracle mask (1) of the same run; the reference line is the pass level;
    # every flipped image is graded (map-only metrics).
    version="3",
    description=(
        "How concentrated the map is. Informational: a concise map is easier to read but not more correct "
        "(the oracle mask is the sparsest map, a random map the densest), so these cells report "
        "scores and neither pass nor fail, and the property does not count in the overall ranking."
    ),
    metrics=(
        MetricSpec("Sparseness", HIGHER, (0.0, 1.0), mx.standard("Sparseness"),
                   "Chalasani et al. 2020, Concise explanations of neural networks using adversarial training, ICML"),
        MetricSpec("Complexity", LOWER, (0.0, 1e6), mx.standard("Complexity"),
                   "Bhatt et al. 2020, Evaluating and aggregating feature-based model explanations, IJCAI",
                   tolerance=0.6),
    ),
    # The mask (a few percent of the pixels) must read as far more concentrated than uniform noise.
    negative="Random",
    positive="Oracle",
    beat=("Random",),
    false_alarm=False,
    informational=True,
    map_only=True,
)

PROPERTIES: dict[str, Property] = {
    p.key: p for p in (LOCALISATION, RANDOMISATION, NOISE_STABILITY, FAITHFULNESS, COMPLEXITY)
}
