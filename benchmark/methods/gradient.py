"""Plain and modified-gradient methods: Saliency, Input×Gradient, Guided Backprop, Deconvolution, DeepLift."""

from __future__ import annotations

from benchmark.methods import register
from benchmark.methods._captum import CaptumMethod
from benchmark.methods.base import Capabilities


@register
class Saliency(CaptumMethod):
    """Absolute gradient of the target logit with respect to each input pixel.

    Reference: Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks, ICLR Workshop 2014.
    """

    name = "Saliency"
    family = "gradient"
    captum_class = "Saliency"
    capabilities = Capabilities(gradient=True)
    params = {"cheap": {"abs": True}, "paper": {"abs": True}}
    # A chunk of 32 ran 1.4-1.8x faster per image than 64 on the quick CNN and 0.96-1.38x on a ResNet-20 at 32 px,
    # with the same bits (the map draws nothing; benchmarks/chunk_size.py, RESULTS.md).
    batch_size = 32


@register
class InputXGradient(CaptumMethod):
    """Input times the gradient of the target logit.

    Reference: Shrikumar et al., Not Just a Black Box: Learning Important Features Through Propagating
    Activation Differences, arXiv:1605.01713, 2016.
    """

    name = "InputXGradient"
    family = "gradient"
    captum_class = "InputXGradient"
    capabilities = Capabilities(gradient=True)
    params = {"cheap": {}, "paper": {}}
    # A chunk of 32 ran 1.4-1.8x faster per image than 64 on the quick CNN and 0.96-1.38x on a ResNet-20 at 32 px,
    # with the same bits (the map draws nothing; benchmarks/chunk_size.py, RESULTS.md).
    batch_size = 32


@register
class GuidedBackprop(CaptumMethod):
    """Gradient with negative signals zeroed at every ReLU on the way back.

    Reference: Springenberg et al., Striving for Simplicity: The All Convolutional Net, ICLR Workshop 2015.
    """

    name = "GuidedBackprop"
    family = "gradient"
    captum_class = "GuidedBackprop"
    capabilities = Capabilities(gradient=True)
    params = {"cheap": {}, "paper": {}}
    # A chunk of 32 ran 1.4-1.8x faster per image than 64 on the quick CNN and 0.96-1.38x on a ResNet-20 at 32 px,
    # with the same bits (the map draws nothing; benchmarks/chunk_size.py, RESULTS.md).
    batch_size = 32


@register
class Deconvolution(CaptumMethod):
    """DeconvNet backward pass: ReLUs applied to the backpropagated signal instead of the forward mask.

    Reference: Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014.
    """

    name = "Deconvolution"
    family = "gradient"
    captum_class = "Deconvolution"
    capabilities = Capabilities(gradient=True)
    params = {"cheap": {}, "paper": {}}
    # A chunk of 32 ran 1.4-1.8x faster per image than 64 on the quick CNN and 0.96-1.38x on a ResNet-20 at 32 px,
    # with the same bits (the map draws nothing; benchmarks/chunk_size.py, RESULTS.md).
    batch_size = 32


@register
class DeepLift(CaptumMethod):
    """DeepLIFT rescale rule against a black (all-zero) reference image.

    Reference: Shrikumar, Greenside & Kundaje, Learning Important Features Through Propagating Activation
    Differences, ICML 2017.
    """

    name = "DeepLift"
    family = "gradient"
    captum_class = "DeepLift"
    capabilities = Capabilities(gradient=True, needs_baselines=True)
    params = {"cheap": {"baselines": 0.0}, "paper": {"baselines": 0.0}}
    batch_size = 32
