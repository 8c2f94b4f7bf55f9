"""Class activation maps: Grad-CAM on the last conv stage and on an inner stage, and Guided Grad-CAM.

Grad-CAM maps are at layer resolution; the shared call path upsamples them bilinearly.
"""

from __future__ import annotations

from benchmark.methods import register
from benchmark.methods._captum import CaptumMethod
from benchmark.methods.base import Capabilities

_CAM = Capabilities(gradient=True, layer=True, needs_layer=True, relu_clipped=True)


@register
class GradCAM(CaptumMethod):
    """Grad-CAM on ``model.cam_layer``: ReLU of activations weighted by spatially averaged gradients.

    Reference: Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization, ICCV 2017.
    """

    name = "GradCAM"
    family = "cam"
    captum_class = "LayerGradCam"
    capabilities = _CAM
    params = {
        "cheap": {"layer": "cam_layer", "relu_attributions": True},
        "paper": {"layer": "cam_layer", "relu_attributions": True},
    }
    # A chunk of 32 ran 1.4-1.8x faster per image than 64 on the quick CNN and 0.96-1.38x on a ResNet-20 at 32 px,
    # with the same bits (the map draws nothing; benchmarks/chunk_size.py, RESULTS.md).
    batch_size = 32


@register
class GradCAMInner(GradCAM):
    """Grad-CAM on ``model.inner_layer`` (an earlier, higher-resolution stage), signed: no ReLU.

    The ReLU is left out (Captum's default): at an inner stage the averaged-gradient channel weights
    often make every location negative, and the clipped map of every image in a batch of 8 from a
    briefly trained SmallCNN was empty.

    Reference: Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization, ICCV 2017.
    """

    name = "GradCAMInner"
    capabilities = Capabilities(gradient=True, layer=True, needs_layer=True)
    params = {
        "cheap": {"layer": "inner_layer", "relu_attributions": False},
        "paper": {"layer": "inner_layer", "relu_attributions": False},
    }


@register
class GuidedGradCAM(CaptumMethod):
    """Guided Backprop multiplied by the upsampled Grad-CAM map of ``model.cam_layer``.

    Reference: Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization, ICCV 2017.
    """

    name = "GuidedGradCAM"
    family = "cam"
    captum_class = "GuidedGradCam"
    capabilities = _CAM
    params = {
        "cheap": {"layer": "cam_layer", "interpolate_mode": "bilinear"},
        "paper": {"layer": "cam_layer", "interpolate_mode": "bilinear"},
    }
    # A chunk of 32 ran 1.4-1.8x faster per image than 64 on the quick CNN and 0.96-1.38x on a ResNet-20 at 32 px,
    # with the same bits (the map draws nothing; benchmarks/chunk_size.py, RESULTS.md).
    batch_size = 32
