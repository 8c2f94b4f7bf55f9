"""LRP for transformers by conservative propagation: attention and LayerNorm scaling held constant."""

from __future__ import annotations

import torch
from torch import nn

from benchmark.methods import register
from benchmark.methods._attention import constant_scale, target_logits
from benchmark.methods.base import AttributionMethod, Capabilities


def _constant_attention(module, inputs, output):
    # Same values, no gradient through the softmax: relevance flows through the values alone (the paper's rule).
    return output.detach()


@register
class ConservativeLRP(AttributionMethod):
    """Gradient×Input with attention probabilities and LayerNorm scales detached (CP-LRP, LRP-0 elsewhere).

    On the ReLU transformer the network is then piecewise linear in its input, so the relevance sums to the
    target logit less what the biases and position embeddings take (tested on a bias-free copy).

    Reference: Ali et al., XAI for Transformers: Better Explanations through Conservative Propagation, ICML 2022.
    """

    name = "ConservativeLRP"
    family = "attention"
    capabilities = Capabilities(gradient=True, attention=True, lrp=True)
    params = {"cheap": {}, "paper": {}}
    batch_size = 64

    def attribute(self, model, inputs, target, params, **context):
        hooks = [probe.register_forward_hook(_constant_attention) for probe in model.attention_probes()]
        hooks += [m.register_forward_hook(constant_scale) for m in model.modules() if isinstance(m, nn.LayerNorm)]
        try:
            x = inputs.detach().requires_grad_(True)
            logits = model(x)
        finally:
            for handle in hooks:
                handle.remove()
        (grad,) = torch.autograd.grad(target_logits(logits, target), x)
        return grad * x.detach()
