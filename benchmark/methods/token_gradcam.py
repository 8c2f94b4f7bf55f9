"""Grad-CAM on the last transformer block's output tokens."""

from __future__ import annotations

import torch

from benchmark.methods import register
from benchmark.methods._attention import target_logits, token_grid
from benchmark.methods.base import AttributionMethod, Capabilities


@register
class TokenGradCAM(AttributionMethod):
    """ReLU of the last block's tokens weighted by their token-averaged gradients (before the final LayerNorm).

    Unlike GradCAM on ``model.cam_layer`` (the normalised tokens the head pools), this reads the residual
    stream itself, as Grad-CAM for ViTs is usually applied.

    Reference: Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization, ICCV 2017; applied to ViT tokens as in Chefer, Gur & Wolf, CVPR 2021 (their baseline).
    """

    name = "TokenGradCAM"
    family = "attention"
    capabilities = Capabilities(gradient=True, attention=True, relu_clipped=True)
    params = {"cheap": {}, "paper": {}}
    batch_size = 64

    def attribute(self, model, inputs, target, params, **context):
        kept = {}

        def keep(module, args, output):
            kept["tokens"] = output

        handle = model.blocks[-1].register_forward_hook(keep)
        try:
            logits = model(inputs)
        finally:
            handle.remove()
        tokens = kept["tokens"]
        # autograd.grad, not backward: the parameters' .grad stay untouched.
        (grad,) = torch.autograd.grad(target_logits(logits, target), tokens)
        with torch.no_grad():
            weights = grad.mean(dim=1, keepdim=True)  # (B, 1, D)
            return token_grid(model, (weights * tokens).sum(dim=-1).clamp(min=0))
