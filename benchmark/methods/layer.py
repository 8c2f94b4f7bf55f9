"""Layer attributions on ``model.inner_layer``, channel-summed and upsampled to the input.

They run on the inner stage on purpose: ``model.cam_layer`` is followed only by global average
pooling and a linear layer, so there the layer methods collapse onto the CAM map (Grad-CAM
without its ReLU): exactly for gradient×activation and location ablation, and up to the black
reference image's own CAM for layer IG, conductance and layer DeepLift (correlation ≥ 0.97 on
both architectures; ``tests/test_methods.py`` checks the exact case). On the cam layer they
would grade the same map several times.
"""

from __future__ import annotations

from typing import ClassVar

import captum.attr
import captum.attr._core.layer.internal_influence as captum_internal_influence
import captum.attr._core.layer.layer_gradient_shap as captum_layer_gradient_shap
import torch

from benchmark.methods import all_methods, register
from benchmark.methods._captum import CaptumMethod
from benchmark.methods._layer_cut import HeadOnOneImage, is_cut
from benchmark.methods._layer_rows import shortcuts
from benchmark.methods._variants import HELD, LayerTap, NotShared, replaced, share_key
from benchmark.methods.base import Capabilities, patch_mask, resolve_layer
from benchmark.methods.shap import BaselineDistributionMethod
from benchmark.profiles import scale_px

_LAYER = Capabilities(gradient=True, layer=True, needs_layer=True)
_LAYER_BASELINES = Capabilities(gradient=True, layer=True, needs_layer=True, needs_baselines=True)
# Integrated Gradients and InternalInfluence differentiate the model at the same path inputs (benchmark.methods.path).
PATH_GRADIENTS = "input-path-gradients"
# The parameters that fix a call's path inputs: where both methods' calls agree on them, they forward the same rows.
PATH_KEYS = ("baselines", "method", "n_steps")


def _path_params(internal_batch_size: int = 128) -> dict:
    common = {
        "layer": "inner_layer",
        "baselines": 0.0,
        "method": "gausslegendre",
        "internal_batch_size": internal_batch_size,
    }
    return {"cheap": {**common, "n_steps": 16}, "paper": {**common, "n_steps": 50}}


@register
class LayerGradientXActivation(CaptumMethod):
    """Gradient times activation of ``model.inner_layer``, summed over channels.

    Reference: Shrikumar et al., Not Just a Black Box: Learning Important Features Through Propagating
    Activation Differences, arXiv:1605.01713, 2016.
    """

    name = "LayerGradientXActivation"
    family = "layer"
    captum_class = "LayerGradientXActivation"
    capabilities = _LAYER
    params = {"cheap": {"layer": "inner_layer"}, "paper": {"layer": "inner_layer"}}
    # A chunk of 32 ran 1.4-1.8x faster per image than 64 on the quick CNN and 0.96-1.38x on a ResNet-20 at 32 px,
    # with the same bits (the map draws nothing; benchmarks/chunk_size.py, RESULTS.md).
    batch_size = 32


@register
class LayerIntegratedGradients(CaptumMethod):
    """Integrated Gradients of ``model.inner_layer`` activations along the path from a black image's.

    Reference: Sundararajan, Taly & Yan, Axiomatic Attribution for Deep Networks, ICML 2017.
    """

    name = "LayerIntegratedGradients"
    family = "layer"
    captum_class = "LayerIntegratedGradients"
    capabilities = _LAYER_BASELINES
    params = _path_params()
    batch_size = 16


@register
class LayerConductance(CaptumMethod):
    """Conductance of ``model.inner_layer`` units: flow of input IG through each unit (black baseline).

    Reference: Dhamdhere, Sundararajan & Yan, How Important Is a Neuron?, ICLR 2019.
    """

    name = "LayerConductance"
    family = "layer"
    captum_class = "LayerConductance"
    capabilities = _LAYER_BASELINES
    params = _path_params()
    batch_size = 16


@register
class InternalInfluence(CaptumMethod):
    """Gradient of the target with respect to ``model.inner_layer``, integrated along the input path.

    Reference: Leino et al., Influence-Directed Explanations for Deep Convolutional Networks, ITC 2018.
    """

    name = "InternalInfluence"
    family = "layer"
    captum_class = "InternalInfluence"
    capabilities = _LAYER_BASELINES
    # 32 rows per pass: 1.66-1.85x faster per image than 128 on the quick CNN, 1.47x on a ResNet-20 at 64 px, 0.95-1.05x
    # on one at 32 px; layer IG moved between 0.98x and 1.45x across runs and conductance ran slower at 32 (0.73-0.79x),
    # so they keep 128 (benchmarks/pass_size.py, RESULTS.md). Maps move by float rounding only.
    params = _path_params(internal_batch_size=32)
    batch_size = 16
    # Its passes are Integrated Gradients' (the same path inputs in the same 32-row passes): an IG call keeps the inner
    # layer's gradients from its own backward passes and holds this method's maps, made by Captum's code from them.
    shares_work = PATH_GRADIENTS

    def attribute(self, model, inputs, target, params, **context):
        key = self.held_key(model, inputs, target, params)
        held = HELD.take(key, self.name) if key is not None else None
        return held[0] if held is not None else super().attribute(model, inputs, target, params, **context)

    def held_key(self, model, inputs, target, params: dict) -> bytes | None:
        """The key this call's maps are held under, or None where they are not shared (a subclass, not registered)."""
        if not HELD.enabled or type(self) is not InternalInfluence or all_methods().get(self.name) is not type(self):
            return None
        return share_key(model, inputs, target, params, (self.shares_work, self.name), rng=False)

    @classmethod
    def on_path(cls, path_params: dict) -> list[dict]:
        """Its parameters at each level whose path inputs are those of a call with ``path_params``."""
        levels = [cls.resolve_params(level) for level in cls.params]
        return [p for p in levels if all(p.get(k) == path_params.get(k) for k in PATH_KEYS)]

    def replayed(self, model, inputs, target, params: dict, tap: LayerTap, **context):
        """Its maps of this call by Captum's code from ``tap``'s recorded passes; None when its passes differ."""
        try:
            with replaced(captum_internal_influence, "compute_layer_gradients_and_eval", tap.replay()):
                return super().attribute(model, inputs, target, params, **context)
        except NotShared:
            return None


@register
class LayerDeepLift(CaptumMethod):
    """DeepLIFT contributions of ``model.inner_layer`` units relative to a black reference image.

    Reference: Shrikumar, Greenside & Kundaje, Learning Important Features Through Propagating Activation
    Differences, ICML 2017.
    """

    name = "LayerDeepLift"
    family = "layer"
    captum_class = "LayerDeepLift"
    capabilities = _LAYER_BASELINES
    params = {
        "cheap": {"layer": "inner_layer", "baselines": 0.0},
        "paper": {"layer": "inner_layer", "baselines": 0.0},
    }
    batch_size = 32
    leftover_attrs = ("input", "output")  # Captum's layer DeepLift leaves these on every ReLU


@register
class LayerGradientShap(BaselineDistributionMethod):
    """GradientShap of ``model.inner_layer`` units (black plus uniform-noise baselines).

    Reference: Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017.
    """

    name = "LayerGradientShap"
    family = "layer"
    captum_class = "LayerGradientShap"
    capabilities = _LAYER_BASELINES
    params = {
        "cheap": {"layer": "inner_layer", "n_samples": 8, "stdevs": 0.0, "n_random_baselines": 3},
        "paper": {"layer": "inner_layer", "n_samples": 50, "stdevs": 0.0, "n_random_baselines": 15},
    }
    batch_size = 16
    # Captum forwards every sample's input and baseline again to read their layer outputs (two no-grad passes of 128
    # rows for 16 images, at most 20 distinct) and differentiates 128 rows at once; each distinct row once and the
    # gradients in passes of 32 gave the same bits and ran 2.46x faster per image on the quick CNN and 2.76x on a
    # ResNet-20 at 32 px (benchmarks/pass_size.py, RESULTS.md; checked bit for bit at run time by
    # benchmark.methods._layer_rows).
    layer_pass_rows: ClassVar[int | None] = 32

    def attribute(self, model, inputs, target, params, **context):
        if self.layer_pass_rows is None:  # Captum's own passes
            return super().attribute(model, inputs, target, params, **context)
        with shortcuts(captum_layer_gradient_shap, self.layer_pass_rows):
            return super().attribute(model, inputs, target, params, **context)


@register
class LayerDeepLiftShap(BaselineDistributionMethod):
    """DeepLiftShap of ``model.inner_layer`` units (black plus uniform-noise baselines).

    Reference: Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017.
    """

    name = "LayerDeepLiftShap"
    family = "layer"
    captum_class = "LayerDeepLiftShap"
    capabilities = _LAYER_BASELINES
    params = {
        "cheap": {"layer": "inner_layer", "n_random_baselines": 3},
        "paper": {"layer": "inner_layer", "n_random_baselines": 15},
    }
    batch_size = 16
    leftover_attrs = ("input", "output")  # Captum's layer DeepLift leaves these on every ReLU


def layer_spatial_size(model, layer, inputs) -> tuple[int, int]:
    """Spatial size of ``layer``'s output for ``inputs`` (one probe forward, hook removed afterwards)."""
    shapes = []
    handle = layer.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
    try:
        with torch.no_grad():
            model(inputs[:1])
    finally:
        handle.remove()
    return shapes[0][-2], shapes[0][-1]


@register
class LayerFeatureAblation(CaptumMethod):
    """Output drop when all ``model.inner_layer`` channels are zeroed in one 4×4-pixel-equivalent patch.

    Reference: Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014 (occlusion,
    applied to feature maps).
    """

    name = "LayerFeatureAblation"
    family = "layer"
    captum_class = "LayerFeatureAblation"
    capabilities = Capabilities(perturbation=True, layer=True, needs_layer=True)
    wrapper_keys: ClassVar[tuple[str, ...]] = ("layer", "patch")
    params = {
        "cheap": {"layer": "inner_layer", "patch": 4, "layer_baselines": 0.0},
        "paper": {"layer": "inner_layer", "patch": 4, "layer_baselines": 0.0},
    }
    # No perturbations_per_eval > 1: Captum 0.9 then feeds N targets to an (N*k)-row output and fails.
    batch_size = 16

    def forward_for(self, model, inputs, params):
        layer = resolve_layer(model, params["layer"])
        # Measured here, before Captum hooks the layer (the probe's hooks must not meet Captum's). In training mode a
        # BatchNorm before the layer would update its statistics from one image instead of the batch.
        cut = not model.training and is_cut(model, layer, inputs)
        return HeadOnOneImage(model, layer) if cut else model

    def build(self, forward, params):
        model = getattr(forward, "model", forward)
        return captum.attr.LayerFeatureAblation(forward, resolve_layer(model, params["layer"]))

    def extra_kwargs(self, model, inputs, params, **context):
        height = inputs.shape[-2]
        h, w = layer_spatial_size(model, resolve_layer(model, params["layer"]), inputs)
        patch = max(1, round(scale_px(params["patch"], height) * h / height))
        return {"layer_mask": patch_mask(h, w, patch, inputs.device)}
