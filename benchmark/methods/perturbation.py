"""Perturbation methods on square patches: Occlusion, FeatureAblation, FeaturePermutation,
ShapleyValueSampling, KernelShap and Lime.

Pixel sizes (``window``, ``stride``, ``patch``) are given for 32 px images and scaled with the
image size, so a 64 px image has the same number of features (and the same cost per image).
Without a patch ``feature_mask`` every scalar would be a feature (field notes).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from captum._utils.models.linear_model import SkLearnRidge

from benchmark.methods import register
from benchmark.methods._captum import CaptumMethod
from benchmark.methods._lime import VectorisedKernelShap, VectorisedLime
from benchmark.methods.base import Capabilities, patch_mask
from benchmark.profiles import scale_px


class PatchMethod(CaptumMethod):
    """Captum perturbation method whose features are square patches shared by all channels."""

    wrapper_keys: ClassVar[tuple[str, ...]] = ("patch",)

    def extra_kwargs(self, model, inputs, params, **context):
        h, w = inputs.shape[-2:]
        return {"feature_mask": patch_mask(h, w, scale_px(params["patch"], h), inputs.device)}


class PerImagePatchMethod(PatchMethod):
    """Lime-style methods fit one surrogate per image; Captum warns and loops on batches, so loop here."""

    def attribute(self, model, inputs, target, params, **context):
        one = super().attribute
        return torch.cat(
            [one(model, inputs[i : i + 1], target[i : i + 1], params, **context) for i in range(len(inputs))]
        )


@register
class Occlusion(CaptumMethod):
    """Output drop when a sliding grey square covers each region (6 px window, stride 3 at 32 px).

    Reference: Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014.
    """

    name = "Occlusion"
    family = "perturbation"
    captum_class = "Occlusion"
    region_copies = True
    capabilities = Capabilities(perturbation=True, needs_baselines=True)
    wrapper_keys = ("window", "stride")
    params = {
        "cheap": {"window": 6, "stride": 3, "baselines": 0.5, "perturbations_per_eval": 16},
        "paper": {"window": 4, "stride": 2, "baselines": 0.5, "perturbations_per_eval": 16},
    }
    batch_size = 16

    def extra_kwargs(self, model, inputs, params, **context):
        c, h = inputs.shape[1], inputs.shape[-2]
        win, stride = scale_px(params["window"], h), scale_px(params["stride"], h)
        return {"sliding_window_shapes": (c, win, win), "strides": (c, stride, stride)}


@register
class FeatureAblation(PatchMethod):
    """Output drop when each 4×4 patch (at 32 px) is replaced by grey, one patch at a time.

    Reference: Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014 (occlusion
    analysis on a fixed patch grid).
    """

    name = "FeatureAblation"
    family = "perturbation"
    captum_class = "FeatureAblation"
    region_copies = True
    capabilities = Capabilities(perturbation=True, needs_baselines=True)
    params = {
        "cheap": {"patch": 4, "baselines": 0.5, "perturbations_per_eval": 16},
        "paper": {"patch": 4, "baselines": 0.5, "perturbations_per_eval": 16},
    }
    batch_size = 16


@register
class FeaturePermutation(PatchMethod):
    """Output drop when each 4×4 patch (at 32 px) is swapped between images of the batch.

    The map depends on the other images in the chunk; a chunk needs at least 2 images.

    Reference: Breiman, Random Forests, Machine Learning 45, 2001 (permutation importance).
    """

    name = "FeaturePermutation"
    family = "perturbation"
    captum_class = "FeaturePermutation"
    region_copies = True
    capabilities = Capabilities(perturbation=True, min_batch=2)
    params = {
        "cheap": {"patch": 4, "perturbations_per_eval": 16},
        "paper": {"patch": 4, "perturbations_per_eval": 16},
    }
    batch_size = 16


@register
class ShapleyValueSampling(PatchMethod):
    """Shapley values of 4×4 patches (at 32 px), estimated from random feature orderings.

    Reference: Castro, Gómez & Tejada, Polynomial Calculation of the Shapley Value Based on Sampling,
    Computers & Operations Research 36(5), 2009.
    """

    name = "ShapleyValueSampling"
    family = "shap"
    captum_class = "ShapleyValueSampling"
    capabilities = Capabilities(perturbation=True, needs_baselines=True, expensive=True)
    params = {
        "cheap": {"patch": 4, "baselines": 0.5, "n_samples": 2, "perturbations_per_eval": 32},
        "paper": {"patch": 4, "baselines": 0.5, "n_samples": 25, "perturbations_per_eval": 32},
    }
    batch_size = 8


@register
class KernelShap(PerImagePatchMethod):
    """Shapley values of 4×4 patches (at 32 px) from a Shapley-kernel weighted linear fit.

    Reference: Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017.
    """

    name = "KernelShap"
    family = "shap"
    captum_class = "KernelShap"
    capabilities = Capabilities(perturbation=True, needs_baselines=True, expensive=True, gpu_batching=False)
    params = {
        "cheap": {"patch": 4, "baselines": 0.5, "n_samples": 128, "perturbations_per_eval": 32},
        "paper": {"patch": 4, "baselines": 0.5, "n_samples": 512, "perturbations_per_eval": 32},
    }
    # 64 samples for 64 patches leave the least-squares fit underdetermined: on a fitted SmallCNN the
    # map correlated 0.24 with FeatureAblation; 128 samples: 0.74, 200: 0.82.
    batch_size = 8

    def build(self, model, params):
        return VectorisedKernelShap(model)  # Captum's KernelShap, its per-sample loop vectorised (same bits)


@register
class Lime(PerImagePatchMethod):
    """Weighted ridge-regression surrogate on random on/off masks of 4×4 patches (at 32 px).

    Captum's default Lasso (alpha 0.01) gives all-zero maps here, so a ridge surrogate is used.

    Reference: Ribeiro, Singh & Guestrin, "Why Should I Trust You?": Explaining the Predictions of Any
    Classifier, KDD 2016.
    """

    name = "Lime"
    family = "perturbation"
    captum_class = "Lime"
    capabilities = Capabilities(perturbation=True, needs_baselines=True, expensive=True, gpu_batching=False)
    wrapper_keys = ("patch", "ridge_alpha")
    params = {
        "cheap": {
            "patch": 4,
            "baselines": 0.5,
            "n_samples": 64,
            "perturbations_per_eval": 32,
            "ridge_alpha": 1.0,
        },
        "paper": {
            "patch": 4,
            "baselines": 0.5,
            "n_samples": 512,
            "perturbations_per_eval": 32,
            "ridge_alpha": 1.0,
        },
    }
    batch_size = 8

    def build(self, model, params):
        # Captum's Lime, its per-sample loop vectorised (same bits).
        return VectorisedLime(model, interpretable_model=SkLearnRidge(alpha=params["ridge_alpha"]))
