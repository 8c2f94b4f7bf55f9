"""Sampling-based SHAP approximations that use gradients: GradientShap and DeepLiftShap."""

from __future__ import annotations

from typing import ClassVar

from benchmark.methods import register
from benchmark.methods._captum import CaptumMethod
from benchmark.methods.base import Capabilities, random_baselines


class BaselineDistributionMethod(CaptumMethod):
    """Captum method whose baselines are a distribution: a black image plus seeded uniform-noise images."""

    wrapper_keys: ClassVar[tuple[str, ...]] = ("layer", "n_random_baselines")

    def extra_kwargs(self, model, inputs, params, **context):
        return {"baselines": random_baselines(inputs, params["n_random_baselines"], context.get("generator"))}


@register
class GradientShap(BaselineDistributionMethod):
    """Expected gradients: gradient × (input − baseline) at random points between input and random baselines.

    Reference: Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017.
    """

    name = "GradientShap"
    family = "shap"
    captum_class = "GradientShap"
    capabilities = Capabilities(gradient=True, needs_baselines=True)
    params = {
        "cheap": {"n_samples": 8, "stdevs": 0.0, "n_random_baselines": 3},
        "paper": {"n_samples": 50, "stdevs": 0.0, "n_random_baselines": 15},
    }
    batch_size = 16
    # 16 images x 8 samples are 128 rows; their gradients in passes of 32 ran 1.06-1.32x faster per image on the quick
    # CNN over three runs and up to 5 % slower on a ResNet-20 at 32 px, with the same draws and bits (benchmarks/pass_size.py,
    # RESULTS.md; tests/test_pass_size.py).
    pass_rows = 32


@register
class DeepLiftShap(BaselineDistributionMethod):
    """DeepLIFT averaged over a distribution of reference images.

    Reference: Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017.
    """

    name = "DeepLiftShap"
    family = "shap"
    captum_class = "DeepLiftShap"
    capabilities = Capabilities(gradient=True, needs_baselines=True)
    params = {"cheap": {"n_random_baselines": 3}, "paper": {"n_random_baselines": 15}}
    batch_size = 16
    # Captum pairs every image with every baseline and stacks the pairs on their references: 16 images make a pass of
    # 128 rows, 8 images one of 64, which ran 1.18-1.25x faster per image on the quick CNN and 1.08x on a ResNet-20 with
    # the same bits (layer DeepLiftShap gained nothing; benchmarks/pass_size.py, RESULTS.md; tests/test_methods.py).
    pass_images = 8
