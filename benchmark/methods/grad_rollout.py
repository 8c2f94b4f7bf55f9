"""Gradient-weighted attention rollout (Chefer et al.'s generic transformer explanation)."""

from __future__ import annotations

import torch

from benchmark.methods import register
from benchmark.methods._attention import eye_like, pooled_rows, recorded_attention, target_logits, token_grid
from benchmark.methods.base import AttributionMethod, Capabilities


@register
class GradAttentionRollout(AttributionMethod):
    """R ← R + Ā·R over the blocks, Ā the head mean of (∇A ⊙ A)⁺ for the target logit, R starting at I.

    A token's relevance is its column mean of R − I (the head averages its tokens; the paper reads the class
    token's row, which holds no identity term off its own entry).

    Reference: Chefer, Gur & Wolf, Generic Attention-model Explainability for Interpreting Bi-Modal and
    Encoder-Decoder Transformers, ICCV 2021.
    """

    name = "GradAttentionRollout"
    family = "attention"
    capabilities = Capabilities(gradient=True, attention=True)
    params = {"cheap": {}, "paper": {}}
    batch_size = 64

    def attribute(self, model, inputs, target, params, **context):
        # autograd.grad, not backward: the parameters' .grad stay untouched.
        with recorded_attention(model) as maps:
            grads = torch.autograd.grad(target_logits(model(inputs), target), maps)
        with torch.no_grad():
            relevance = None
            for attn, grad in zip(maps, grads):
                a = (grad * attn).clamp(min=0).mean(dim=1)
                if relevance is None:
                    relevance = eye_like(a).clone()
                relevance = relevance + a @ relevance
            return token_grid(model, pooled_rows(relevance - eye_like(relevance)))
