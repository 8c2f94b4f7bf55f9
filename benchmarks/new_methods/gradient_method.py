"""A gradient method that no stored grid has seen, for timing a grid that adds it (``benchmarks/store_speed.py``).

Loaded only through ``$SHORTCUT_BENCH_METHODS``, never by discovery of the package.
"""

import torch

from benchmark.methods import register
from benchmark.methods.base import AttributionMethod, Capabilities


@register
class AddedGradientMagnitude(AttributionMethod):
    """|gradient| of the target logit, the largest over the colour channels.

    Reference: Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks, ICLR Workshop 2014.
    """

    name = "AddedGradientMagnitude"
    family = "gradient"
    capabilities = Capabilities(gradient=True)
    params = {"cheap": {}, "paper": {}}

    def attribute(self, model, inputs, target, params, **context):
        x = inputs.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x).gather(1, target.view(-1, 1)).sum(), x)
        return grad.abs().amax(1, keepdim=True)
